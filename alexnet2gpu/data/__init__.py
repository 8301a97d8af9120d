"""Images to batches: class folders, crops, flips and colour noise (folders.py), a loader batch (batch.py), the
built-in data set (synthetic.py), batches made ahead on the device (prefetch.py), one image as the network takes
it at evaluation, as a torchvision transform (preprocess.py); gpu/ decodes and crops on the GPU, prepare/ is the
one-time 256x256 preparation of a data set."""
