"""The task router (``--router on``): a method told the task identity at test (``needs_task_id``) answered
without it.

A task-identity method (``single``, ``piggyback-ti``, ``lora``) answers task j with its own generator for j
(``eval_generator(j)``), so a user must say which task each image belongs to. The router says it instead: a small
classifier R (an image -> the index of its task) chooses the generator for each image. It is trained without
any old data, from the mapping memory of Assoc-GAN: after each task t a mapper M_t learns that task's inverse
mapping y -> x (``nets.mapper``: the same network, training and calibration on the stored pairs as Assoc-GAN's,
with Assoc-GAN's default sizes), and R is trained anew on

- label t: the current task's inputs x and, as many, the current mapper's samples M_t(y) (so that R cannot
  tell the current task from the past ones by "real or regenerated"),
- label j < t: samples M_j(z) of every past task's mapper, z the images made from the current pairs that lie in
  task j's target domain (Assoc-GAN's domain plan, ``nets.mapper.plan_domains``: after each task the mean and
  spread of 14 features of its targets are kept, 112 bytes): images that look like task j's inputs, made
  without a single stored image of task j. On restoration tasks z is the current target (every target a clean
  photo); on a chain of styles (photo -> sketch -> blueprint) the previous task's targets are the current inputs,
  and the task before's are what the previous task's mapper makes of them. Where that chain reaches a task that
  loses colour (a photo -> sketch task: its mapper's photos made of sketches made of blueprints come in one
  guessed tint), those samples get drawn colours, as Assoc-GAN's do (``nets.mapper.recoloured``): R then tells
  such a task by what is left, not by the tint (tones3, 3 seeds: the sketch task's photos sent right 88% of the
  time instead of 58%; docs/results.md, "The same baselines on tones3").

What it keeps, in bytes as stored and counted in the method's memory (``memory_breakdown``: ``router_mappers``,
``router``): one mapper per task in float16 with its task's domain signature, and R's weights in float32. Every draw (crops, samples, R's
initialisation and batches) comes from side streams of their own and R and the mappers are built with the
global stream forked, so the generator trains bit for bit as without the router; its state is saved with the
training state, so a killed run resumes bit for bit.

Evaluated with the router, a method records beside its identity-told matrix a second one, ``routed``: every
task j <= t scored with each test image answered by the generator of the task R chose for it, and R's accuracy
on each task's test images (``router_accuracy``). The routed row does not need the task identity.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import RunConfig
from .data.tasks import Task
from .evaluate import evaluate_routed
from .memory import module_bytes
from .metrics import Convention
from .nets.mapper import DomainSignature, Mapper, MapperTraining, calibrate, colour_kept, domain_images, plan_domains, recolour, recoloured
from .rng import side_stream

MAPPER_NGF, MAPPER_BLOCKS, MAPPER_BATCH, MAPPER_LR, MAPPER_CROP = 16, 2, 16, 5e-3, 24  # Assoc-GAN's defaults
ROUTER_WIDTH = 16
ROUTER_MIN_STEPS = 200  # R's training steps after each task: half a task's steps, at least this many
ROUTER_BATCH = 16  # images of each task a step
ROUTER_LR = 2e-3


class RouterNet(nn.Module):
    """R: three convolutions (the second with stride 2), then each feature's mean and spread over the image
    (what tells degradations apart: noise raises the spread of high-pass features, blur lowers it, a colour
    cast moves the means), then a linear layer to one logit per task. Any image size."""

    def __init__(self, n_tasks: int, width: int = ROUTER_WIDTH):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, 1, 1),
            nn.ReLU(True),
            nn.Conv2d(w, 2 * w, 3, 2, 1),
            nn.ReLU(True),
            nn.Conv2d(2 * w, 2 * w, 3, 1, 1),
            nn.ReLU(True),
        )
        self.head = nn.Linear(4 * w + 6, n_tasks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() * 2 - 1
        h = self.features(x)
        pooled = [h.mean((2, 3)), h.std((2, 3)), x.mean((2, 3)), x.std((2, 3))]
        return self.head(torch.cat(pooled, 1))


def _built(seed_gen: torch.Generator, make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` initialised from a seed drawn from ``seed_gen``, the global stream left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (), generator=seed_gen)))
        return make()


class TaskRouter:
    """The mapping memory and R of one method's run (the loop holds it: ``Trainer``, with ``--router on``)."""

    def __init__(self, cfg: RunConfig, n_tasks: int, device: torch.device, log: Callable[[str, float], None] = lambda name, value: None):
        self.cfg, self.n_tasks, self.device, self.log = cfg, n_tasks, device, log
        self.mappers: list[Mapper] = []  # stored in float16
        self._work: list[Mapper] = []  # float32 working copies
        self.signatures: list[DomainSignature] = []  # each task's target domain (Assoc-GAN's): where its mapper's inputs lie
        self.colour_kept: list[float] = []  # each task's share of its sources' colour that its targets keep
        self.net: RouterNet | None = None  # None until a second task is learned: with one task every image is task 1's

    def stream(self, *keys: object) -> torch.Generator:
        return side_stream(self.cfg.seed, "router", *keys)

    def new_mapper(self, t: int) -> Mapper:
        return _built(self.stream("mapper-init", t), lambda: Mapper(MAPPER_NGF, MAPPER_BLOCKS)).to(self.device)

    # ---- after each task ---------------------------------------------------------------------
    def after_task(self, t: int, task: Task) -> None:
        """Train task t's mapper (kept) and R anew on the current inputs and every mapper's samples."""
        trainer = MapperTraining(self.new_mapper(t), max(1, self.cfg.steps // 2), MAPPER_LR, self.stream("mapper", t))
        while trainer.done < trainer.steps:
            trainer.step(task, MAPPER_BATCH, MAPPER_CROP, self.device)
        calibrate(trainer.mapper, task, self.stream("calibrate", t), self.device)
        self.log("router/mapper_loss", trainer.loss)
        self.remember(trainer.mapper.half())
        self.signatures.append(DomainSignature(task.train_y[:256].float().div(255)))
        self.colour_kept.append(colour_kept(task.train_x[:256], task.train_y[:256]))
        if len(self.mappers) > 1:
            self.net = self.train_router(t, task)

    def remember(self, mapper: Mapper) -> None:
        self.mappers.append(mapper.eval())
        with torch.random.fork_rng(devices=[]):  # its initial weights are replaced at once: the global stream is left as it was
            work = Mapper(MAPPER_NGF, MAPPER_BLOCKS).to(self.device)
        work.load_state_dict({k: v.float() for k, v in mapper.state_dict().items()})
        self._work.append(work.eval())

    def training_batch(self, t: int, task: Task, gen: torch.Generator, plan: dict[int, str | int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One step's images and labels: ``ROUTER_BATCH`` of task t (half its inputs, half M_t's samples) and as many
        samples of each past task j's mapper, applied to the images in task j's target domain that ``plan`` makes
        from the same current pairs."""
        n = ROUTER_BATCH
        x, y = task.sample(n, gen)
        x, y = x.to(self.device), y.to(self.device)
        images, labels = [x[: n // 2]], [torch.full((n // 2,), t)]
        with torch.no_grad():
            images.append(self._work[t].sample(y[n // 2 :], gen).float())
            labels.append(torch.full((n - n // 2,), t))
            for j in range(t):
                made = self._work[j].sample(domain_images(plan, self._work, j, x, y, gen), gen).float()
                images.append(recolour(made, gen) if recoloured(plan, j, self.colour_kept) else made)
                labels.append(torch.full((n,), j))
        return torch.cat(images), torch.cat(labels).to(self.device)

    def plan(self, t: int, task: Task) -> dict[int, str | int]:
        """Where each past task's target domain lies among the images made from task t's pairs (Assoc-GAN's
        ``plan_domains``): on restoration tasks the current targets; on a chain of styles the current inputs for
        the previous task, and what its mapper makes of them for the task before."""
        x, y = task.sample(32, self.stream("plan", t))
        plan = plan_domains(self.signatures[:t], self._work[:t], x, y, self.device)
        self.log("router/plan_" + "_".join(str(plan[j]) for j in sorted(plan)), float(len(plan)))
        return plan

    def train_router(self, t: int, task: Task) -> RouterNet:
        plan = self.plan(t, task)
        gen = self.stream("net", t)
        net = _built(gen, lambda: RouterNet(self.n_tasks)).to(self.device)
        steps = max(ROUTER_MIN_STEPS, self.cfg.steps // 2)
        opt = torch.optim.Adam(net.parameters(), lr=ROUTER_LR)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        net.train()
        loss = torch.zeros(())
        for _ in range(steps):
            x, label = self.training_batch(t, task, gen, plan)
            loss = F.cross_entropy(net(x)[:, : t + 1], label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        self.log("router/loss", float(loss.detach()))
        return net.eval()

    # ---- answering ----------------------------------------------------------------------------
    @torch.no_grad()
    def route(self, x: torch.Tensor, seen: int) -> torch.Tensor:
        """The task R chooses for each image of ``x`` among the ``seen`` tasks trained (CPU, long)."""
        if self.net is None or seen <= 1:
            return torch.zeros(x.shape[0], dtype=torch.long)
        out = [self.net(x[i : i + 64].to(self.device))[:, :seen].argmax(1).cpu() for i in range(0, x.shape[0], 64)]
        return torch.cat(out)

    def evaluate(
        self, t: int, generator_of: Callable[[int], nn.Module], tasks: list[Task], convention: Convention
    ) -> tuple[list[dict[str, float]], list[float]]:
        """After task t: each task j <= t scored with routed answers, and R's accuracy on each task's test images."""
        routed, accuracy = [], []
        for j in range(t + 1):
            scores, chosen = evaluate_routed(lambda x: self.route(x, t + 1), generator_of, tasks[j], self.device, convention)
            routed.append(scores)
            accuracy.append(float((chosen == j).float().mean()))
        return routed, accuracy

    # ---- bookkeeping ----------------------------------------------------------------------------
    def memory(self) -> dict[str, int]:
        out = (
            {"router_mappers": sum(module_bytes(m) for m in self.mappers) + sum(s.nbytes for s in self.signatures) + 4 * len(self.colour_kept)}
            if self.mappers
            else {}
        )
        if self.net is not None:
            out["router"] = module_bytes(self.net)
        return out

    def state_dict(self) -> dict:
        return {
            "mappers": [m.state_dict() for m in self.mappers],
            "signatures": [(sig.mean, sig.std) for sig in self.signatures],
            "colour_kept": list(self.colour_kept),
            "net": None if self.net is None else self.net.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.mappers, self._work = [], []
        for sd in state["mappers"]:
            with torch.random.fork_rng(devices=[]):
                mapper = Mapper(MAPPER_NGF, MAPPER_BLOCKS).to(self.device).half()
            mapper.load_state_dict(sd)
            self.remember(mapper)
        self.signatures = [DomainSignature.of(mean, std) for mean, std in state["signatures"]]
        self.colour_kept = list(state.get("colour_kept", [1.0] * len(self.signatures)))  # a state saved before it: none recoloured
        self.net = None
        if state["net"] is not None:
            with torch.random.fork_rng(devices=[]):
                self.net = RouterNet(self.n_tasks).to(self.device)
            self.net.load_state_dict(state["net"])
            self.net.eval()
