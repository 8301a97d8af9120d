"""AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) with its original two-tower split."""
from alexnet2gpu._version import __version__
from alexnet2gpu.model.layers import canonical_shapes, init_weights
from alexnet2gpu.model.layouts.merged import AlexNet
from alexnet2gpu.model.layouts.tower_parallel import TowerParallelAlexNet
from alexnet2gpu.model.layouts.two_device import TwoTowerAlexNet, merge_towers, split_towers
from alexnet2gpu.model.stack import StackOptions
from alexnet2gpu.weights.hub import load, transforms

__all__ = ["AlexNet", "StackOptions", "TowerParallelAlexNet", "TwoTowerAlexNet", "__version__", "canonical_shapes",
           "init_weights", "load", "merge_towers", "split_towers", "transforms"]
