"""What a job measures about units and layers, one module per measure: completeness, influence, essence,
ablation, label purity, surrogate trees, the decision measures that gather them (``decisions``), the
machine observer (``mis``), Sobol indices and their region analyses (``sobol``, ``regions``), attribution,
and the network's tail after a layer (``tail``) that the interventions re-run."""
