"""torch.hub entry points of this repository (works offline from a clone: source="local").

    import torch
    net = torch.hub.load(".", "alexnet", source="local", weights="runs/RUN/checkpoints/best.pt").eval()
    net = torch.hub.load(".", "alexnet", source="local", num_classes=10)               # fresh weights
    net = torch.hub.load(".", "alexnet", source="local", weights="alexnet.safetensors",
                         layout="two-device", devices=("cuda:0", "cuda:1"))
"""
dependencies = ["torch", "torchvision", "numpy", "PIL"]


def alexnet(weights=None, num_classes=None, in_channels=None, layout="merged", device="cpu", devices=None,
            init="paper", dropout=0.5):
    """AlexNet with its two towers (Krizhevsky et al. 2012). weights: a train.py checkpoint, a run folder or
    a .safetensors file (None: drawn with `init`). layout: "merged" (one device) or "two-device". With
    weights the module has .classes, .mean (subtract from 0..255 input) and .crop. Returned in training
    mode, as torchvision's models are: call .eval() to predict."""
    from alexnet2gpu.weights.hub import load_network

    return load_network(weights, num_classes, in_channels, layout, device, devices, init, dropout)
