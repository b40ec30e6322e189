// HyperLoRA: hover hints for the controls of the HyperLoRA accordion.
// The WebUI loads every javascript/*.js of an extension. Controls are found by the elem_ids the
// script gives them, script_<txt2img|img2img>_hyperlora_<item>; the hint is keyed by <item>.

(function() {
    const hyperloraHints = {
        "enable": "Turn HyperLoRA on: the person in the reference photos becomes an identity LoRA applied to every image of this generation",
        "accordion": "Turn HyperLoRA on: the person in the reference photos becomes an identity LoRA applied to every image of this generation",
        "images": "One or more photos of the same person; several photos (other angles, other light) give a steadier likeness. Photos are not stored in the image's parameters",
        "gallery": "The face crops actually used, numbered like the photos; the status line below says why a photo was skipped or which photos show several faces",
        "model": "fidelity: closest likeness; edit: follows the prompt more (style, expression, age) with a little less likeness",
        "refresh": "Look at the model folders again: updates the model and saved identity lists and the setup checklist",
        "weight": "Strength of the identity LoRA; 0.75-0.85 suits most photoreal SDXL checkpoints",
        "face": "Which face to use when a photo shows several: the largest, the one chosen by 'Face index', or the one the detector is surest of",
        "face_index": "With Face = Index: the face to use, counting from 0 from the left of the photo",
        "trigger_words": "Prepend 'fcsks fxhks fhyks, ' (the words HyperLoRA was trained with) to each prompt unless it is already there. The default is in Settings > HyperLoRA",
        "remove_background": "Grey out everything around the face outline before encoding, as the reference implementation does",
        "grayscale": "Encode the faces in grayscale, so the colours and lighting of the photos carry over less",
        "identity": "An identity saved with 'Save as LoRA'; used instead of the photos",
        "status": "The last encoding: photos used, time, cache hit and warnings",
        "save_name": "Name of the identity 'Save as LoRA' writes: letters, digits, spaces, - _ . ( ) [ ]; no folders",
        "overwrite": "Let 'Save as LoRA' replace a saved identity of the same name",
        "save": "Save the identity of the photos as a LoRA file in the Lora folder (hyperlora/): it shows in the Lora tab and works as <lora:name:weight> without this panel",
        "checklist": "The models HyperLoRA needs and the folder each one goes to",
        "download": "Download the missing models from the Hugging Face Hub into the folders listed (several GB); progress shows here and in the console",
        "check": "Look for the models again, e.g. after copying them into the folders by hand",
        "ad_fix": "ADetailer repaints faces with only the scripts in Settings > ADetailer > Script names to apply to ADetailer; this adds hyperlora there and saves it, so the face pass keeps the identity",
        "ad_undo": "Take hyperlora out of ADetailer's script list again (Settings > ADetailer shows the list)",
        "advanced": "Per-photo weights, mixing identities and identity sliders; leave closed for the usual single identity",
        "photo_weights": "One relative weight per photo, in the order of the photos, e.g. '1, 1, 0.5': a photo of weight 2 counts twice as much as one of weight 1, 0 leaves it out. Empty: all photos count alike",
        "mix": "Mix identities like photos are fused: saved identities with weights, e.g. 'alice:0.7, bob:0.3'; '@photos:0.5' adds the photos above. Weights are relative. Used instead of the saved identity above",
        "slider_positive": "Slider: the identity applied at +strength on top of the identity, e.g. photos of older people saved as an identity",
        "slider_negative": "Slider: the identity applied at -strength on top of the identity, e.g. photos of younger people; the difference of the two is the direction (older - younger)",
        "slider_strength": "How far to move along the slider: positive identity at +strength, negative at -strength; negative values go the other way. 0 turns the slider off",
        "identities": "Browse the saved identities: pick one to use, rename, delete or download its LoRA file",
        "identity_gallery": "The saved identities (models/Lora/hyperlora); click one to select it",
        "identity_selected": "The identity the buttons below act on: click it in the gallery",
        "identity_new_name": "The new name for Rename: letters, digits, spaces, - _ . ( ) [ ]; an existing name is refused",
        "identity_confirm": "Tick before Delete: deleting removes the identity's LoRA file, card, preview and record",
        "identity_use": "Put the selected identity into 'Saved identity' above, so the next generation uses it",
        "identity_rename": "Rename the selected identity: every file moves, and <lora:new name:0.8> works in prompts",
        "identity_delete": "Delete the selected identity's files (tick 'Confirm delete' first)",
        "identity_download": "Offer the selected identity's .safetensors file for download below",
        "identity_refresh": "Read the saved identities again, e.g. after saving one or changing the folder by hand",
        "identity_file": "The LoRA file to download: an ordinary SDXL LoRA for any WebUI, ComfyUI or kohya tool",
        "refine": "Train the saved identity for a few steps on this checkpoint from its photos and save it as a new identity (SDXL only)",
        "refine_steps": "Training steps of 4 face crops each; the authors' recipe is 50",
        "refine_lr": "AdamW learning rate; 1e-4 is the recipe, higher learns faster but drifts from the prediction",
        "refine_resolution": "Side of the square face crops in pixels, a multiple of 8; 768 is the recipe",
        "refine_save_name": "Name of the refined identity; empty: the saved identity's name + '-refined'",
        "refine_score": "After refining, make one fixed-seed image with each identity and show both likeness scores (2 extra images)",
        "refine_run": "Refine the identity chosen under 'Saved identity' from the Reference photos; generations wait meanwhile and Interrupt stops it",
        "refine_kit": "Write a kohya sd-scripts training kit (LoRA, face crops, masks, dataset.toml, train.sh) into outputs/hyperlora-kits",
        "refine_loss": "The training loss of each step of the last refine",
    };

    const idPattern = /^script_(?:txt2img|img2img)_hyperlora_(.+)$/;
    const selector = '[id^="script_txt2img_hyperlora_"], [id^="script_img2img_hyperlora_"]';
    let timer = null;

    // The element that should carry the title: an accordion's header, not its whole body.
    function titleTarget(element) {
        if (element.classList.contains("input-accordion") || element.classList.contains("gradio-accordion")) {
            return element.querySelector(".label-wrap") || element;
        }
        return element;
    }

    function addHyperloraHints() {
        timer = null;
        gradioApp().querySelectorAll(selector).forEach(function(element) {
            const match = idPattern.exec(element.id);
            const hint = match && hyperloraHints[match[1]];
            const target = hint && titleTarget(element);
            if (target && !target.title) {
                target.title = hint;
            }
        });
    }

    onUiLoaded(addHyperloraHints);
    onUiUpdate(function() {
        if (timer === null) {
            timer = setTimeout(addHyperloraHints, 500); // once per burst of UI updates
        }
    });
})();
