"""The network stated once: the layer table and its constants (layers.py), the tower stack and how it computes
(stack.py), the three layouts that place the towers (layouts/), and the summary command (info.py)."""
