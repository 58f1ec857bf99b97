"""hierarchy_heads' own parts: the networks (model.py), routing calibrated on cached outputs
(routing.py, pure numpy) and the routed predictor (predictor.py). The family itself, its space and
declaration, is spaces/hierarchy_heads.py."""
