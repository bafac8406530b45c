"""CIFAR-10, DDPM cont. (VP; Ho et al.'s U-Net): score_sde's recipe (configs/cifar10_recipes.py)."""

from configs.cifar10_recipes import cifar10_recipe


def get_config():
    return cifar10_recipe("vp", "ddpm", deep=False)
