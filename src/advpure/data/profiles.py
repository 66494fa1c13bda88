"""What each dataset brings with it: its images' shape and classes, the models advpure uses on
it unless told otherwise, and its perturbation budgets ε. One table, read by the evaluation
config (defaults), the protocols (budgets) and the checks that a model fits the data."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatasetProfile:
    """A dataset's image shape C×H×W (ImageNet: the papers' 224 crop), number of classes, default
    models (None: none ships; the user names one) and ε per norm (None: no standard budget)."""

    shape: tuple[int, int, int]
    classes: int
    classifier: str | None = None           # the defended classifier
    diffusion: str | None = None            # the purifiers' eps-model
    guidance: str | None = None             # AGDM's robust φ
    eps: dict[str, float] = field(default_factory=dict)


CIFAR_EPS = {"linf": 8 / 255, "l2": 0.5}
PROFILES: dict[str, DatasetProfile] = {
    "digits": DatasetProfile((1, 8, 8), 10, "builtin:digits-cnn", "builtin:digits-unet",
                             "builtin:digits-guidance", {"linf": 0.2, "l2": 1.0}),
    "cifar10": DatasetProfile((3, 32, 32), 10, "builtin:cifar10-resnet18",
                              "builtin:cifar10-unet-small", "builtin:cifar10-guidance", CIFAR_EPS),
    "cifar100": DatasetProfile((3, 32, 32), 100, eps=CIFAR_EPS),
    "svhn": DatasetProfile((3, 32, 32), 10, eps=CIFAR_EPS),
    "imagenet": DatasetProfile((3, 224, 224), 1000, eps={"linf": 4 / 255, "l2": 3.0}),
}
MODEL_FLAGS = {"classifier": "--classifier", "diffusion": "--diffusion",
               "guidance": "--guidance-classifier"}


def default_model(dataset: str, role: str) -> str:
    """The spec of the model playing ``role`` (classifier, diffusion, guidance) on ``dataset``;
    a ValueError saying which flag to give where none ships."""
    spec = getattr(PROFILES[dataset], role)
    if spec is None:
        raise ValueError(f"{MODEL_FLAGS[role].removeprefix('--')}: no {role} model ships for "
                         f"{dataset}; give {MODEL_FLAGS[role]} SPEC (`advpure models` lists the "
                         "forms)")
    return spec


def default_eps(dataset: str, norm: str) -> float:
    """The dataset's ε for ``norm`` (digits ℓ∞ 0.2, ℓ2 1.0; CIFAR/SVHN 8/255, 0.5; ImageNet
    4/255, 3.0)."""
    try:
        return PROFILES[dataset].eps[norm]
    except KeyError:
        raise ValueError(f"eps: {dataset} has no default ε for {norm}; give --eps") from None
