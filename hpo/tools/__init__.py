"""Commands beside the main flow: `hpo activations` (what each activation does) and `hpo dashboard`."""
