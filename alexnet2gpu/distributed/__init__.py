"""Where the towers run: the torchrun world and its process groups (world.py), the exchanges between towers as
autograd functions (comm.py), and device names, synchronisation and autocast (device.py)."""
