"""Quick refine: ~50 LoRA training steps from the predicted identity, and the kohya training kit.

``crops`` makes the training images (face crops, loss masks), ``kit`` writes them for kohya
sd-scripts, ``lora_path``/``schedule``/``trainer`` train the identity LoRA on a frozen UNet that a
host (the WebUI adapter in ``hyperlora_ext.webui.refine_host``) provides. Nothing here imports the
WebUI.
"""
