"""CIFAR-10, NCSN++ cont. deep (VE): score_sde's recipe (configs/cifar10_recipes.py)."""

from configs.cifar10_recipes import cifar10_recipe


def get_config():
    return cifar10_recipe("ve", "ncsnpp", deep=True)
