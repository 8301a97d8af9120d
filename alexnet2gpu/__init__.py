"""AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) with its original two-tower split."""
from .model import AlexNet, canonical_shapes, init_weights
from .layouts.tower_parallel import TowerParallelAlexNet
from .layouts.two_device import TwoTowerAlexNet, merge_towers, split_towers

__all__ = ["AlexNet", "TowerParallelAlexNet", "TwoTowerAlexNet", "canonical_shapes", "init_weights", "merge_towers",
           "split_towers"]
