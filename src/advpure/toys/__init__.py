"""Small closed-form experiments from the papers (``advpure toy``)."""
