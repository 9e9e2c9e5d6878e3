"""The experiment files shipped with convbench (TOML, validated by convbench.bench.experiments)
and the layer files of well-known networks (networks/*.txt, read by convbench.layerfile).

A folder at the top of the repository, installed as the package data ``convbench.experiments``
(pyproject.toml maps it), so a non-editable install finds the files too."""
