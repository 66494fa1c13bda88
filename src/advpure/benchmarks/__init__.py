"""What ``advpure bench`` runs: measurements that print and save their figures, never assert."""
