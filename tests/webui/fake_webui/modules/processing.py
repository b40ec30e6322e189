"""``modules.processing``: the job loop of A1111 1.10 (``process_images_inner``) in its real order.

The "sampler" runs the UNet ``steps`` times on a seeded latent; the "image" is the final latent.
Test hooks (not in A1111): ``sampler_step_hooks`` are called as ``hook(p, step)`` at every step and
may raise (an exception escaping the sampler) or set ``shared.state.interrupted``.
``image_decoder``, when set, stands for the VAE: ``image_decoder(p, index, sample)`` gives the image
(a PIL image in A1111) that the per-image hooks and the output see; unset, the image is the latent.
"""

import json

import torch
from modules import devices, extra_networks, infotext_utils, scripts, shared

sampler_step_hooks = []
image_decoder = None


class StableDiffusionProcessing:
    def __init__(
        self,
        prompt="",
        negative_prompt="",
        seed=1,
        steps=3,
        batch_size=1,
        n_iter=1,
        width=64,
        height=64,
        sd_model=None,
        scripts_runner=None,
        script_args=None,
        is_api=False,
        disable_extra_networks=False,
        override_settings=None,
    ):
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.seed = seed
        self.steps = steps
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.width, self.height = width, height
        self.sd_model = sd_model if sd_model is not None else shared.sd_model
        self.is_api = is_api
        self.disable_extra_networks = disable_extra_networks
        self.override_settings = override_settings or {}
        self.extra_generation_params = {}
        self.comments = {}
        self.iteration = 0
        self.is_hr_pass = False
        self.enable_hr = False
        self.hr_checkpoint_name = None
        self.refiner_checkpoint = None
        self.init_images = None
        self.extra_network_data = None
        self.hr_extra_network_data = None
        self.prompts = self.seeds = self.subseeds = None
        self.scripts = scripts_runner
        self._script_args = None
        if script_args is not None:
            self.script_args = script_args

    @property
    def script_args(self):
        return self._script_args

    @script_args.setter
    def script_args(self, value):
        # A1111: assigning script_args runs every AlwaysOn script's setup().
        self._script_args = value
        if self.scripts is not None:
            self.scripts.setup_scrips(self, is_ui=not self.is_api)

    def comment(self, text):
        self.comments[text] = 1

    def setup_prompts(self):
        prompts = (
            self.prompt
            if isinstance(self.prompt, list)
            else [self.prompt] * (self.batch_size * self.n_iter)
        )
        self.all_prompts = list(prompts)
        self.all_negative_prompts = [self.negative_prompt] * len(self.all_prompts)
        self.all_hr_prompts = list(self.all_prompts)

    def parse_extra_network_prompts(self):
        self.prompts, self.extra_network_data = extra_networks.parse_prompts(self.prompts)

    def setup_conds(self):
        # The text encoders run here: their Linears merge lazily if a network targets them.
        self.c = self.sd_model.get_learned_conditioning(self.prompts)
        self.uc = self.sd_model.get_learned_conditioning([self.negative_prompt] * len(self.prompts))

    def init(self, all_prompts, all_seeds, all_subseeds):
        pass

    def rng_next(self):
        g = torch.Generator().manual_seed(int(self.seeds[0]) + 1000 * int(self.is_hr_pass))
        return torch.randn(
            len(self.prompts), 4, self.sd_model.model.diffusion_model.w640, generator=g
        )

    def run_sampler(self, x, c):
        for step in range(self.steps):
            if shared.state.interrupted or shared.state.skipped:  # k-diffusion stops here too
                break
            for hook in sampler_step_hooks:
                hook(self, step)
            x = x + self.sd_model.model.diffusion_model(x, c)
        return x


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    def __init__(self, enable_hr=False, hr_prompt="", **kwargs):
        super().__init__(**kwargs)
        self.enable_hr = enable_hr
        self.hr_prompt = hr_prompt

    def setup_prompts(self):
        super().setup_prompts()
        if self.enable_hr:
            self.all_hr_prompts = [self.hr_prompt or p for p in self.all_prompts]

    def sample(
        self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts
    ):
        x = self.rng_next()
        if self.scripts is not None and scripts.VERSION == "1.10":
            self.scripts.process_before_every_sampling(
                p=self, x=x, noise=x, c=conditioning, uc=unconditional_conditioning
            )
        samples = self.run_sampler(x, conditioning)
        if not self.enable_hr:
            return samples
        return self.sample_hr_pass(samples)

    def sample_hr_pass(self, samples):
        if shared.state.interrupted:
            return samples
        self.is_hr_pass = True
        noise = self.rng_next()
        hr_prompts = self.all_hr_prompts[
            self.iteration * self.batch_size : (self.iteration + 1) * self.batch_size
        ]
        _, self.hr_extra_network_data = extra_networks.parse_prompts(hr_prompts)
        if not self.disable_extra_networks:
            extra_networks.activate(self, self.hr_extra_network_data)
        self.hr_c = self.sd_model.get_learned_conditioning(self.prompts)
        if self.scripts is not None:
            self.scripts.before_hr(self)
            if scripts.VERSION == "1.10":
                self.scripts.process_before_every_sampling(
                    p=self, x=samples, noise=noise, c=self.hr_c, uc=self.hr_c
                )
        samples = self.run_sampler(samples + 0.1 * noise, self.hr_c)
        self.is_hr_pass = False
        return samples


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    def __init__(self, init_images=None, **kwargs):
        super().__init__(**kwargs)
        self.init_images = init_images or []

    def sample(
        self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts
    ):
        x = self.rng_next()
        if self.scripts is not None and scripts.VERSION == "1.10":
            self.scripts.process_before_every_sampling(
                p=self, x=x, noise=x, c=conditioning, uc=unconditional_conditioning
            )
        return self.run_sampler(x, conditioning)


class Processed:
    def __init__(self, p, images_list, infotexts=None):
        self.images = images_list
        self.infotexts = infotexts or []
        self.info = self.infotexts[0] if self.infotexts else ""
        self.extra_generation_params = p.extra_generation_params
        self.comments = "".join(f"{c}\n" for c in p.comments)

    def js(self):
        return json.dumps(
            {"extra_generation_params": self.extra_generation_params, "infotexts": self.infotexts}
        )


def create_infotext(p, all_prompts, index):
    generation_params = {
        "Steps": p.steps,
        "Seed": p.all_seeds[index],
        "Size": f"{p.width}x{p.height}",
        "Model": p.sd_model.sd_checkpoint_info.name_for_extra,
        **p.extra_generation_params,
    }
    text = ", ".join(
        k if k == v else f"{k}: {infotext_utils.quote(v)}"
        for k, v in generation_params.items()
        if v is not None
    )
    negative = (
        f"\nNegative prompt: {p.all_negative_prompts[index]}"
        if p.all_negative_prompts[index]
        else ""
    )
    return f"{all_prompts[index]}{negative}\n{text}".strip()


def process_images(p):
    """A1111's order: ``before_process``, then the override settings (a checkpoint named in
    ``sd_model_checkpoint`` is loaded: ``shared.checkpoints`` stands for
    ``sd_models.checkpoint_aliases``; ``p.sd_model`` is A1111's property over ``shared.sd_model``),
    the job, and the previous checkpoint back afterwards."""
    if p.scripts is not None:
        p.scripts.before_process(p)
    previous = shared.sd_model
    override = shared.checkpoints.get(p.override_settings.get("sd_model_checkpoint"))
    if override is not None:
        shared.sd_model = p.sd_model = override
    try:
        return process_images_inner(p)
    finally:
        if override is not None:
            shared.sd_model = p.sd_model = previous


def process_images_inner(p):
    p.setup_prompts()
    p.all_seeds = [int(p.seed) + x for x in range(len(p.all_prompts))]
    p.all_subseeds = list(p.all_seeds)
    if p.scripts is not None:
        p.scripts.process(p)
    infotexts, output_images = [], []
    with torch.no_grad(), p.sd_model.ema_scope():
        p.init(p.all_prompts, p.all_seeds, p.all_subseeds)
        for n in range(p.n_iter):
            p.iteration = n
            if shared.state.skipped:  # a Skip ends the current batch only
                shared.state.skipped = False
            if shared.state.interrupted or shared.state.stopping_generation:
                break
            p.prompts = p.all_prompts[n * p.batch_size : (n + 1) * p.batch_size]
            p.seeds = p.all_seeds[n * p.batch_size : (n + 1) * p.batch_size]
            p.subseeds = p.all_subseeds[n * p.batch_size : (n + 1) * p.batch_size]
            if p.scripts is not None:
                p.scripts.before_process_batch(
                    p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds
                )
            p.parse_extra_network_prompts()
            if not p.disable_extra_networks:
                with devices.autocast():
                    extra_networks.activate(p, p.extra_network_data)
            if p.scripts is not None:
                p.scripts.process_batch(
                    p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds
                )
            p.setup_conds()
            samples = p.sample(
                conditioning=p.c,
                unconditional_conditioning=p.uc,
                seeds=p.seeds,
                subseeds=p.subseeds,
                subseed_strength=0,
                prompts=p.prompts,
            )
            if p.scripts is not None:
                ps = scripts.PostSampleArgs(samples)
                p.scripts.post_sample(p, ps)
                samples = ps.samples
                p.scripts.postprocess_batch(p, samples, batch_number=n)
            for i, image in enumerate(samples):
                p.batch_index = i  # read by ADetailer (need_call_postprocess/process)
                if image_decoder is not None:
                    image = image_decoder(p, n * p.batch_size + i, image)
                if p.scripts is not None:
                    pp = scripts.PostprocessImageArgs(image)
                    p.scripts.postprocess_image(p, pp)
                    image = pp.image
                    # (mask overlay and the inpainting composite happen here in A1111)
                    pp = scripts.PostprocessImageArgs(image)
                    p.scripts.postprocess_image_after_composite(p, pp)
                    image = pp.image
                infotexts.append(create_infotext(p, p.all_prompts, n * p.batch_size + i))
                output_images.append(image)
    if not p.disable_extra_networks and p.extra_network_data:
        extra_networks.deactivate(p, p.extra_network_data)
    res = Processed(p, output_images, infotexts)
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res
