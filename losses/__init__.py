"""Training objectives of score models: denoising score matching with its weightings and time distributions
(Song et al. 2021; Ho et al. 2020; Karras et al. 2022) and importance sampling of t (Song et al. 2021b)."""
