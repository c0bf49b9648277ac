"""The model: AlexNet build / save / load, shared preprocessing, datasets and the train loop."""
