"""Tests that start Flower engines (Ray simulation, deploy-local SuperLink/SuperNodes, `flwr run`): the slow ones."""
