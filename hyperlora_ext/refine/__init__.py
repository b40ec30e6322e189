"""Quick refine: ~50 LoRA training steps from the predicted identity, and the kohya training kit.

``photos``/``crops`` make the training images (face crops, loss masks), ``kit`` writes them for
kohya sd-scripts; ``host`` says what the program holding the SDXL checkpoint provides,
``lora_path``/``schedule``/``session``/``trainer`` train the identity LoRA on its frozen UNet and
``save`` keeps the result as ``NAME-refined``. The WebUI host is
``hyperlora_ext.webui.refine_host``; nothing here imports the WebUI.
"""
