"""AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) with its original two-tower split."""
from .layouts.merged import AlexNet
from .layouts.tower_parallel import TowerParallelAlexNet
from .layouts.two_device import TwoTowerAlexNet, merge_towers, split_towers
from .model import canonical_shapes, init_weights

__all__ = ["AlexNet", "TowerParallelAlexNet", "TwoTowerAlexNet", "canonical_shapes", "init_weights", "merge_towers",
           "split_towers"]
