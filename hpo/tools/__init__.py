"""Commands beside the main flow: `hpo activations` (activation_properties: what each activation does),
`hpo dashboard`, `hpo proxy`, and the offline data sets `make data` writes (datasets)."""
