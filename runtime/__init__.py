"""The model runtime: AlexNet build / load / checksum, the one preprocessing function, device
and precision choice, GPU JPEG decoding, and a loaded version's forward pass.

Used by worker/ (scoring) and trainer/ (training) alike. May import the core, torch and
torchvision; never worker, trainer, api or cli.
"""
