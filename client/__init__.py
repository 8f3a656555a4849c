"""fedfer's Flower ClientApp: turns Flower messages into calls of the fer_models core."""
