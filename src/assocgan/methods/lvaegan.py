"""Lifelong VAEGAN (Ye & Bors [48]): generative replay by a VAE-GAN whose latent space also groups tasks.

*Original.* Lifelong VAEGAN learns a sequence of data domains with one VAE-GAN: an encoder infers a continuous
latent z and a discrete latent that says which domain an image belongs to, a decoder/generator makes images
from both, and a discriminator sharpens them. Past domains are not forgotten because the model is trained on
its own generated samples of them (generative replay) together with the new domain's data.

*Here.* It plays the role MeRGAN's source GAN plays (see ``mergan``, whose machinery it shares): a small
task-conditional VAE-GAN of *source images* that supplies past tasks' inputs x~ = Dec(z, j), z ~ N(0, I),
whose pseudo-targets y~ = G_prev(x~) come from the generator frozen after the previous task, with the
alignment term ``--lvaegan-align * MSE(G(x~), G_prev(x~))`` on the same samples. Its encoder gives
(mu, log var) of z and logits of the task variable; the decoder reconstructs each source from its z and the
encoder's task probabilities, so the discrete latent is what tells the decoder which task an image is from,
and a cross-entropy term on the known task labels makes that latent group the tasks (the encoder can then
tell which task an input comes from). Loss of one source-model update, on the G batch's sources (current task
and replayed past tasks, each with its label, so the VAE-GAN trains with its own replay): MSE reconstruction
+ ``--lvaegan-kl`` x KL per pixel (2 sigma^2 of a Gaussian likelihood with sigma = 0.1) + task cross-entropy
+ ``--lvaegan-adv`` x adversarial loss of prior samples against a small conditional critic + the same
per-task moment term as MeRGAN (``--lvaegan-moments``) on prior samples; the decoder is MeRGAN's source
generator, per-pixel noise included. One update per G step, beside the replay's S_prev sample and G_prev pass
(what that costs a step: docs/results.md, "How the baselines were set up").

*Memory.* Between tasks: encoder, decoder and critic (float32, as they go on training) and the previous G
(float16). Constant in the number of tasks (the task variable is sized for the benchmark's tasks from the
start); the frozen decoder used for replay during a task is a working copy of the stored one, and the
optimiser is made anew for each task. Sizes at the defaults: docs/results.md, "How the baselines were set up".
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nets.layers import no_weight_grads
from ..rng import randn
from .base import Option
from .mergan import GenerativeReplay, SourceCritic, SourceGenerator, gr_options, lsgan, moment_loss, upsampling_plan


class SourceEncoder(nn.Module):
    """Image -> (mu, log var) of a latent z and logits of the task it belongs to."""

    def __init__(self, n_tasks: int, size: int, width: int = 16, nz: int = 32):
        super().__init__()
        self.nz = nz
        k, s0 = upsampling_plan(size)
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(k):
            c_out = width * 2**i
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in * s0 * s0, 2 * nz + n_tasks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.fc(self.body(x * 2 - 1).flatten(1)).float()
        return h[:, : self.nz], h[:, self.nz : 2 * self.nz].clamp(-10, 10), h[:, 2 * self.nz :]


class LifelongVAEGAN(GenerativeReplay):
    name = "lvaegan"
    title = "Lifelong VAEGAN"
    cite = "Ye & Bors [48]: VAE-GAN generative replay with a task-grouping latent"
    prefix = "lvaegan"
    options = gr_options("lvaegan", width=16, nz=32, lr=1e-3) + (
        Option("lvaegan_kl", 0.02, "weight of the KL term per pixel (2 sigma^2 of the Gaussian likelihood)", low=0),
        Option("lvaegan_adv", 0.1, "weight of the VAE-GAN's adversarial term", low=0),
    )

    def make_source(self):
        ctx, dev = self.ctx, self.ctx.device
        w, nz = self.o("width"), self.o("nz")
        self.E = SourceEncoder(ctx.n_tasks, ctx.cfg.size, w, nz).to(dev)
        self.Dec = SourceGenerator(ctx.n_tasks, ctx.cfg.size, w, nz).to(dev)
        self.V_critic = SourceCritic(ctx.n_tasks, w).to(dev)

    def source_modules(self):
        return {"vae_encoder": self.E, "vae_decoder": self.Dec, "vae_critic": self.V_critic}

    def sampler(self):
        return self.Dec

    def sample_sources(self, model, labels):
        return model.sample(labels, self.ctx.dgen)

    @torch.no_grad()
    def infer_task(self, x: torch.Tensor) -> torch.Tensor:
        """The task the encoder's discrete latent assigns to each source image."""
        return self.E(x.to(next(self.E.parameters()).device))[2].argmax(1).cpu()

    def train_source(self, x, labels):
        gen, n, dev = self.ctx.dgen, x.shape[0], x.device
        eps = randn((n, self.o("nz")), gen, dev)
        z_prior, maps_prior = self.Dec.noise(n, gen, dev)
        maps_rec = randn((n, 3, *x.shape[-2:]), gen, dev)
        with self.ctx.autocast():
            mu, logvar, logits = self.E(x)
            z = mu + torch.exp(0.5 * logvar) * eps
            recon = self.Dec(z, maps_rec, logits.float().softmax(1))
            prior = self.Dec(z_prior, maps_prior, labels)
            loss_c = 0.5 * (lsgan(self.V_critic(x, labels), True) + lsgan(self.V_critic(prior.detach(), labels), False))
        self.source_opt.zero_grad(set_to_none=True)
        loss_c.backward()
        with no_weight_grads(self.V_critic), self.ctx.autocast():
            adv = lsgan(self.V_critic(prior, labels), True)
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(1).mean() / x[0].numel()
        loss = F.mse_loss(recon.float(), x.float()) + self.o("kl") * kl + F.cross_entropy(logits.float(), labels) + self.o("adv") * adv
        if self.o("moments") > 0:
            loss = loss + self.o("moments") * moment_loss(prior, x, labels)
        loss.backward()
        self.step_source()
