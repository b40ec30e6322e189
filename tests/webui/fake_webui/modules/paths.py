"""``modules.paths``; the fixture points these at a temporary folder."""

script_path = "."
data_path = "."
models_path = "./models"
