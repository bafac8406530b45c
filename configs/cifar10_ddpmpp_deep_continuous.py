"""CIFAR-10, DDPM++ cont. deep (VP): score_sde's recipe (configs/cifar10_recipes.py)."""

from configs.cifar10_recipes import cifar10_recipe


def get_config():
    return cifar10_recipe("vp", "ddpmpp", deep=True)
