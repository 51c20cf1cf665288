"""Part 5 of the library: the captioners of notebooks 05-08 and what they
share (training loop, evaluation, trajectory display). May import every
lower part: core, data, evaluation, diffusion, clip.
"""
