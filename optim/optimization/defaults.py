"""The render defaults, in one place: every entry point (``InputOptimization``, ``render_vis``,
``render_layer``, the atlas, the recipes, the CLI and the app) reads them from here.

They were chosen on ``benchmarks/class_transfer.py`` (issue 12): 20 ImageNet classes (10 from the earlier
tuning, 10 held out) rendered on EfficientNet-Lite0, each render resized to a network's native input size and
judged by Lite0 itself (224 px) and by Lite2 (260 px, never used in the render), with the share of colour values
that export to exactly 0 or 255. What the numbers said:

- the old defaults (128 px, 1/f^1.5, lr 0.05, constant) clipped 45-64% of all values (sigmoid saturation: a
  neon, posterized look) and transferred to Lite2 at 260 px for 6.0/4.0 of 10 at 48 steps;
- halving the rate and a 1/f^1.25 spectrum bring clipping under 1%, but alone they transfer worse;
- what restores transfer at native size is magnifying the content during the render (random scale 0.9-1.5):
  the judge at native size sees objects larger than they were drawn;
- 160 px (1.56x the pixels of 128) beat 128 and 144 at equal settings; 224 px costs 3x;
- MACO's phase-only image (``PhaseImage``) never clips but transferred worse (6-8/10) at these budgets;
- a constant rate lets clipping grow with steps (2.5% at 128); an inverse square-root decay
  (``DEFAULT_LR_DECAY_STEPS``) holds it under 1%.

Tried later and not kept (CPU, 3 seeds, 48 / 128 steps, Lite2 at 260 px on the held-out classes; these
defaults scored 8.0 / 9.3 of 10 there): no rotation (8.0 / 9.3, and the old classes fell to 8.7 at 48), twice the
jitter (7.7 / 9.3), scale 1.0-1.6 (6.7 / 9.3), a higher rate decaying faster (0.035 over 24 or 16 steps: 8.0-8.7 /
9.3 but 1.6-2.4% clipped at 128; 0.045 over 8 steps: 7.7 / 8.7, 2.7% clipped), 0.03 over 32 steps (no better).
Nearly every held-out miss is one class, the container ship: on single-class renders (8 seeds) Lite2 names it
at 48 steps for no seed and at 128 steps for about half, and input noise, blur, colour gain, flips, 192 or 224 px,
scale 0.7-1.3 and a centred logit left that unchanged; a log-softmax objective never rendered it.

Tried in session 6 (same setup): two or three transformed views of each image per step (2x the cost: the
container stayed at 0/6 at 48 steps and 4/6 at 128 alone); decoupled weight decay (AdamW) on the spectrum, which
pulls the image towards grey and holds clipping near 0% even at twice the rate: 0.5 at these defaults gave
9.3 / 8.3 at 48 steps and 10 / 9.3 at 128 with 0.0% clipped; 0.5 with lr 0.05-0.08 fell at 48 steps (6.7-7.7
held out). AdamW(weight_decay=0.5) at lr 0.035 gave 10 / 10 at 128 steps on its first 3 seeds but 9.8 / 9.7 over
6 (0.1% clipped at most), and 9.3 / 8.3 at 48 (the old set falls from 10); at lr 0.03, 9.0 / 8.3 and 9.7 / 9.3.
A trade, not a gain on the goals, so it was not taken. What does move the container at 48 steps is a steeper
spectrum (single-class, 6 seeds): 1/f^1.75 with AdamW 0.5-2 at lr 0.025-0.035 named it for 2-4/6 at 48 steps and
4-6/6 at 128, against 0/6 and 4/6 here, but with 32-69% of the values clipped (1/f^2: 84%). The lead for a later
session is that low-frequency content without saturation: the squash, not the spectrum, is what clips.

Session 7 took that lead: the squash is now ``AlgebraicSigmoid`` (sigmoid's value and slope at 0, polynomial
tails), with a 1/f^1.5 spectrum and AdamW(weight_decay=0.5). Full 20-class sweeps, CPU, seeds 0-2 (held-out
Lite2 at 260 px, 48 / 128 steps): the algebraic squash alone (Adam) 8.7 / 9.0, with weight decay 0.5 7.7 / 10.0
(seeds 3-5: 8.7 / 9.7; old classes 9.5 / 10.0 over all six), both with 0.0% clipped; weight decay 0.25:
8.0 / 8.5 (2 seeds); lr 0.04: 7.3-8.0 / 9.0-9.7; a 1.5x or 2x steeper squash (``x * 1.5`` before it): 8.3 / 9.3,
and 8 / 9 on seed 0. Bounding the image instead (standardising it before the sigmoid, or shrinking it above a
standard deviation) kept clipping near 0% but the container ship fell to 2-4/6 at 128 steps, and 1/f^1.75 with
the algebraic squash still clipped 11-19%. The container ship at 48 steps is still missed (0/6 seeds with these
defaults); at 128 it is named in 5/6. ``benchmarks/class_transfer.py`` itself (2 threads, fused AdamW, seeds 0-2)
gave 9.3 / 8.3 at 48 steps and 9.7 / 9.3 at 128 (old / held out), 0.0% clipped: within seed noise of the
previous defaults on transfer, with no clipped values.

Session 8 (same sweep, 1 thread, seeds 0-1 or 0-2, paired by seed with these defaults, which scored 10 / 8, 10 / 8,
9 / 7 at 48 steps and 10 / 10 at 128 on seeds 0, 1, 2): a spectrum schedule (1/f^2 falling linearly to 1/f^1.5
over 24 or 48 steps, the parameter and Adam's moments rescaled so the image is continuous) named the container
ship at 48 steps in 3 of 4 renders, but the other classes fell (6-7 / 5-9 at 48) and 12-26% of values clipped at
48; 1/f^1.75 with weight decay 1 or 2, 1/f^1.65, and 1/f^1.6 with decay 0.75 (0.0% clipped, 8-10 / 6-9 at 48,
9-10 / 8-10 at 128); an extra decay growing with frequency (``1 - lr * 2 * f / f_max`` per step: 9 / 7); Adam's
eps at 0.1, which slows the weakly driven high frequencies (9-10 / 7-8); a zero initial spectrum (10 / 8); lr 0.05
decaying over 8 steps (10 / 7, twice). None beat these defaults on a seed they share: the misses move between
the container ship, the eagle, the zebra and the flamingo. (These sweeps run one thread; the benchmark's two
threads sum in another order, so its renders differ a little, which is why its figures above are not these.)
The hard classes are man-made objects, whose shape matters more than texture: on a third, fresh set (every
hundredth class from 50, ``class_transfer.py --fresh``) these defaults score 7.0 at 48 steps and 9.7 at 128
(espresso maker and microphone 0/3 at 48). Six renders each of the container ship, espresso maker and microphone
favour a steeper spectrum (hits at 48 / 128 steps of 18: these defaults 3 / 14; 1/f^1.65 10 / 16; 1/f^1.75 with
decay 1 11 / 17; 1/f^2 falling to 1.5 over 24 steps 6 / 13; scale 0.7-1.5 5 / 14, 1.0-2.0 3 / 13; no rotation
4 / 16; twice the jitter 3 / 13), but over all 30 classes, two renders each (seed 0, of 60), they lose: these
defaults 54 / 58, 1/f^1.6 53 / 57, 1/f^1.65 49 / 56, 1/f^1.75 with decay 1 48 / 54.

Session 9 (that 60-render screen, seed 0, Lite2 at 260 px of 60 at 48 / 128 steps; these defaults 54 / 58):
NAdam with the same decoupled decay 54 / 57; the model seeing the whole image magnified 1.0-1.3x (an output
frame that grows with the scale, from a 140 px render, about the cost of 160 px cropped) 47 / 57, though on the
three hard objects it scored 7 / 17 of 18 against 3 / 14; the logit minus 0.25 or 0.5 of the log-sum-exp of all
logits 47 / 58 and 47 / 55; contrast towards grey by a random 0.5-1 48 / 55; input noise (0.04) 46 / 54.
The one lead: a schedule that knows the render's length. A cosine from ``lr`` to ``lr / 10`` over the render
named all 60 at 128 steps (seed 1: 59 against these defaults' 57), but only 47 at 48; with a floor of ``lr / 2``,
or starting at 50% or 70% of the render, 51-53 / 58-59; NAdam with the cosine 53 / 58. Short renders want all
the progress they can get and long ones a calm end; a budget-aware schedule would need every render to know its
length (``render_vis`` snapshots and the benchmark's one render judged at four budgets would change).

Session 10 checked that lead on the benchmark itself (``class_transfer.py --fresh``, seeds 0-2, Lite2 at 260 px,
classes named of 10 per set, old / held-out / fresh, mean over the seeds, at 48 and then 128 steps; one thread per
job, two jobs side by side). These defaults: 10 / 8.0 / 7.7 and 10 / 9.0 / 10, 0.0% clipped. A cosine from
``lr`` to ``lr / 10`` over 128 steps, constant after: 9.7 / 8.0 / 7.0 and 9.7 / 9.3 / 9.7. That cosine with
1/f^1.65: 9.0 / 8.0 / 8.0 and 10 / 9.3 / 9.3. With 1/f^1.75 and weight decay 1.0: 9.3 / 8.3 / 7.7 and
9.7 / 9.7 / 9.7 (the container ship 3/3 at 128 steps, 0.2% clipped at 32). Every difference is within one miss
per set, the spread between seeds; the lead did not hold, and nothing changed. The misses that stay at 48 steps:
container ship, bald eagle, espresso maker, Siberian husky.

Session 11 tried iterate averaging (:class:`~optim.optimization.ImageAverage`, then an exponential moving average
with a fixed decay; session 12 replaced it). A render returns an average of its images rather than its last one,
and it costs one image-sized buffer. It was measured paired, so seed noise
cancels: one render per seed, judged on its last image and on averages of the same trajectory. Setup: 30 classes,
Lite2 at 260 px, two threads, other jobs running at times. Classes named of 10, old / held-out / fresh:

- seeds 0-5, 48 steps: the last image 9.5 / 8.5 / 7.2; decay 0.9 9.8 / 8.8 / 7.5.
- seeds 0-5, 128 steps: the last image 9.8 / 9.7 / 9.3; decay 0.9 10 / 9.8 / 9.7. Per seed, 0.9 was never below
  the last image at these two budgets (one class or two more in 9 of 12); 0.95 fell 2 below on one seed at 48.
- ``class_transfer.py --fresh --average 0.9`` at b4bc8dc, where ``average`` was that decay (seeds 0-2; the
  average that folds in the final image too),
  decay 0.9 against the last image: 32 steps 9.0 / 7.0 / 6.3 against 9.0 / 7.7 / 6.3; 48 steps 9.7 / 8.7 / 6.7
  against 9.3 / 8.3 / 7.0; 64 steps 10 / 8.7 / 8.3 against 10 / 8.7 / 8.7; 128 steps 10 / 9.7 / 9.7 against
  9.7 / 9.3 / 9.7. Summed over the four budgets, a wash (+0.1 classes).

So averaging stayed opt-in then. A window that grows with the render's length (a fixed decay lags a short render)
was the untested next step. Lite0 at 224 px and clipping (0.0%) did not move.

Session 12 took that step: polynomial-decay averaging (Shamir & Zhang 2013), where the ``n``-th image enters with
weight ``(eta + 1) / (n + eta)``, so the last ``n / (eta + 1)`` images hold about two thirds of the weight. The same
paired screen, seeds 0-5 (a scratch script: one ``render_vis`` per seed with these defaults and no averaging, averages
kept from its step callback, judged with ``class_transfer.py``'s ``top1``; 2 threads, one test job beside it at
times; its last-image and decay-0.9 rows reproduce session 11's benchmark figures on seeds 0-2 exactly). Lite2 at
260 px, hits of 180 (30 classes x 6 seeds) at 32 / 48 / 64 / 128 steps:

- the last image 132 / 151 / 166 / 173 (622 of 720);
- the decay-0.9 average 133 / 156 / 164 / 177 (630); ``eta`` 3: 135 / 156 / 163 / 179 (633); ``eta`` 5:
  138 / 157 / 165 / 179 (639); ``eta`` 8: 135 / 155 / 167 / 178 (635); ``eta`` 1 (seeds 0-2): 303 of 360 against
  the last image's 311.

``eta`` 5 (``average=1/6``) was ahead of the last image summed over the four budgets on 5 seeds of 6 and level on
the sixth; it is the default (``DEFAULT_AVERAGE``). Per class set (old / held-out / fresh, mean of 6 seeds) it gives
at 48 steps 9.8 / 8.8 / 7.5 (the last image 9.5 / 8.5 / 7.2) and at 128 steps 10 / 10 / 9.8 (9.8 / 9.7 / 9.3),
with Lite0 at 224 px 10 / 10 on the old and held-out sets at 48 and 128 steps, and 0.0% clipped. Chosen among four
windows on these classes, so the gain on unseen classes may be smaller. The held-out set at 48 steps (8.8) is still
short of issue 12's 9 (the screen counted hits per set, not per class).
``class_transfer.py --steps 32 48 64 128 --seeds 0 1 2 --fresh --per-class`` on these defaults, alone on the
machine, reproduces the screen's ``eta`` 5 rows of seeds 0-2 exactly (Lite2 at 260 px, old / held-out / fresh:
9.3 / 8.0 / 6.3, 9.7 / 8.7 / 7.0, 10 / 8.7 / 8.3 and 10 / 10 / 9.7 at 32 / 48 / 64 / 128 steps; Lite0 at 224 px
10 / 10 / 9.3 at 48 and 10 / 10 / 10 at 128; 0.0% clipped). At 48 steps Lite2 misses the container ship,
the espresso maker and the microphone on all three seeds; at 128 steps only the espresso maker, once.
With averaging on, three earlier candidates were screened again (seeds 0-2, the same classes and judge; hits of 90
at 32 / 48 / 64 / 128 steps, these defaults 71 / 76 / 81 / 89, 317 in all): lr 0.035 68 / 73 / 80 / 88 (309);
1/f^1.65 69 / 80 / 83 / 84 (316; the fresh set 8.7 at 48 steps, but the container ship still 0/3 at 48 and 128);
1/f^1.75 with weight decay 1.0 63 / 75 / 79 / 90 (307, 0.2% clipped at 32). None was taken.

Session 13 measured the cost goal (no more than 1.5x the pre-issue-12 defaults, which render 128 px and feed the
model 132 px: 160 px is 1.47x those pixels): interleaved, alone, 30 images, three renders each, the ratio of medians
was 1.49 at 48 steps and 1.64 at 20 steps (one render of these defaults took 0.72-0.84 s a step in the same run), so
it sits at the limit within timing noise. 152 px (1.33x the pixels) on the same screen scored 65 / 75 / 78 / 90 of 90
(308; held-out 8.3 at 48 steps, every class at 128 steps), behind 160 px at every budget under 128; not taken.
A spectrum that starts steeper and relaxes (1/f^1.65 falling linearly to 1/f^1.5 over 64 steps, the image kept
continuous by rescaling the spectrum parameter and Adam's moments with the scale) scored 60 / 77 / 79 / 87 (303):
the container ship stayed 0/3 at 48 steps, and 32 and 128 steps fell; not taken.

Session 14 (the same screen; these defaults 71 / 76 / 81 / 89, 317): the model fed the image downsampled to 128 px
for the first 24 steps (coarse to fine) 58 / 72 / 72 / 85 (287); fed at a random size of 128-160 px each step
64 / 75 / 79 / 87 (305); Adam's ``betas=(0.9, 0.99)`` 71 / 71 / 81 / 89 (312). Both resizings draw objects for a
smaller view than the judges', the opposite of what transfers. None was taken.
Feeding the model channels-last images (``InputOptimization(channels_last=True)``, 3-30% faster steps on the CPU)
changes float rounding and with it every trajectory. Paired on this screen, channels-last against contiguous:
seeds 0-2 320 / 317, seeds 3-5 316 / 322, seeds 6-8 307 / 314 (943 against 953 of 1080; at 128 steps 258 against
267 of 270, behind on all three triples). No mechanism was found, but renders stay contiguous by default.
``class_transfer.py --fresh --previous --lucent --cost 5`` run with channels-last as the default at the time (seeds
0-2) at 48 steps: Lite2 at 260 px 10.0 / 8.3 / 7.7, Lucent 9.7 / 8.7 / 8.0; at 128 steps 10 / 9.3 / 9.7, Lucent
10 / 9.7 / 9.0; 0.0% clipped; one-class renders 1.15x the previous defaults' cost per step and 0.31x Lucent's,
the 30-image batch 0.95x and 0.14x. Contiguous, the one-class ratio to the previous defaults measured 1.19x and
the batch's 1.5-1.8x (the batched cost grows faster than the pixels on a CPU).
Session 15 (the same screen, hits of 90 at 32 / 48 / 64 / 128 steps; the defaults before it 71 / 76 / 81 / 89 =
317 on seeds 0-2, 322 on seeds 3-5, 314 on seeds 6-8). Two spectrum shapes first: an extra ``(f_c / f)^q`` damping
above ``f_c`` cycles per image (the white, wool-like high-frequency texture Lite2 read as "mitten" or "wool" on the
container ship's 48-step renders): 8 cycles, q 0.5: 68 / 79 / 83 / 89 (319; seeds 3-5: 317), and its renders look
calmer; q 1.0: 307; 16 cycles: 314; 4 cycles: 302; q 0.25: 313. 1/f^1.75 with a floor at 2 cycles (the
lowest frequencies no faster than now): 304. 176 px: 65 / 76 / 83 / 88 (312). None taken.
What moved the screen is the gradient, not the image: the Skip Gradient Method (Wu et al. 2020), which multiplies
the gradient through every residual branch by a factor and leaves the skip connections' alone, known to make
adversarial images transfer between networks. Lite0 has 9 residual blocks of 16. Factor 0.5: 78 / 81 / 83 / 88
(330; seeds 3-5: 333); factor 0.25: 75 / 84 / 86 / 90 (335; seeds 3-5 330, seeds 6-8 328: 993 of 1080 against 953),
with the held-out set at 48 steps 9.3 / 9.3 / 8.7 of 10 (9.1 over seeds 0-8; 8.6 before) and Lite0 itself at 224 px
naming 89 of 90 at 48 steps and 90 of 90 at 128. 0.25 is ``DEFAULT_RESIDUAL_GRADIENT``. ``class_transfer.py
--steps 48 --previous --cost 3``: one-class renders 1.17x the previous defaults' cost per step.
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable, Iterable, List, Optional, Sequence, Type, Union

import torch
import torch.nn as nn

from .averaging import check_average

__all__ = [
    "DEFAULT_SIZE",
    "DEFAULT_LR",
    "DEFAULT_WEIGHT_DECAY",
    "PHOTO_START_OPTIMIZER",
    "DEFAULT_AVERAGE",
    "resolve_average",
    "DEFAULT_RESIDUAL_GRADIENT",
    "check_residual_gradient",
    "resolve_residual_gradient",
    "DEFAULT_DECAY_POWER",
    "DEFAULT_STEPS",
    "DEFAULT_LR_DECAY_STEPS",
    "DEFAULT_SCALE",
    "scheduled_lr",
    "schedules_lr",
    "check_lr_decay_steps",
    "default_image",
    "default_transforms",
    "model_input_channels",
    "make_optimizer",
    "starts_from_photo",
    "check_lr",
    "OptimizerArg",
]

#: Side of the square image rendered when no image is given and the model declares no native size.
DEFAULT_SIZE = 160
#: The learning rate at step 0 (half of Lucent's 0.05; it decays, see ``DEFAULT_LR_DECAY_STEPS``).
DEFAULT_LR = 0.025
#: The default optimizer's decoupled weight decay (``torch.optim.AdamW``): each step shrinks the parameters by
#: ``lr * weight_decay``, pulling the image towards mid-grey, so colours settle where they matter instead of
#: drifting towards the squash's ends: the L2 decay prior of Yosinski et al. (2015), "Understanding neural networks
#: through deep visualization", arXiv:1506.06579. With it, the held-out classes of ``benchmarks/class_transfer.py``
#: transfer at 128 steps in 5 of 6 seeds (the container ship rose from 0/3 seeds to 3/3). It pulls every
#: parameter towards 0: grey for the Fourier image, black for a raw ``PixelImage``, and a render that starts from
#: a photo would fade towards grey (such renders default to ``PHOTO_START_OPTIMIZER``).
DEFAULT_WEIGHT_DECAY = 0.5
#: The optimizer of a render that starts from a photo when none is given (an image parameterization built with
#: ``init``, as ``render_vis(image=<tensor>)`` and the photo recipes build it; see :func:`starts_from_photo`):
#: plain Adam, so the photo does not fade towards grey under ``DEFAULT_WEIGHT_DECAY``.
PHOTO_START_OPTIMIZER = torch.optim.Adam
#: The iterate averaging of a render from noise (:class:`~optim.optimization.ImageAverage`, polynomial-decay weights
#: with ``eta = 5``): its image is an average of its steps' images weighted towards the last sixth (about two thirds
#: of the weight), a window that grows with the render. Measured paired (one trajectory judged on its last image and
#: on its averages, 6 seeds, the module docstring's session 12): ahead of the last image at 32, 48 and 128 steps,
#: one class behind at 64, and summed over the four budgets never behind on a seed. A render that starts from a
#: photo never averages by default (:func:`resolve_average`).
DEFAULT_AVERAGE = 1 / 6
#: The factor on the gradient through a model's residual branches during a render from noise (the Skip Gradient
#: Method of Wu et al. 2020, :func:`~optim.models.residual_gradient`; the forward pass is the model's own): the
#: image leans on what the skip connections carry from earlier layers, and other networks name it more often.
#: Session 15 (this docstring): on ``benchmarks/class_transfer.py``'s 30 classes rendered on EfficientNet-Lite0 and
#: judged by Lite2 at 260 px, 0.25 raised the hits from 317 to 335 of 360 (seeds 0-2) and the held-out set at 48
#: steps from 8.7 to 9.3 of 10. Models without such blocks (``residual_gradient`` attributes: the zoo's
#: EfficientNet-Lite) render with their true gradient; a render that starts from a photo does too
#: (:func:`resolve_residual_gradient`).
DEFAULT_RESIDUAL_GRADIENT = 0.25
#: Exponent of the Fourier parameterization's 1/f scaling for renders from noise (Lucid's is 1). A steeper
#: scaling gives low frequencies, hence object-scale shapes, a larger share of every step; 1.0 transfers worse
#: at small budgets. Under a sigmoid, 1.5 saturated into flat clipped colour fields (1.25 was the default then);
#: the algebraic sigmoid keeps it unclipped, and 1.75 clips again.
DEFAULT_DECAY_POWER = 1.5
#: Content magnification range of the default transforms (``TransformationRobustness(scale=...)``): drawing
#: objects that still read when magnified is what makes a render hold at a larger native size.
DEFAULT_SCALE = (0.9, 1.5)
#: Optimization steps of one render (Lite0's own 10/10 and Lite2's 10/10 and 9/10 on the two class sets of
#: ``benchmarks/class_transfer.py`` at this budget).
DEFAULT_STEPS = 128

#: Steps over which the learning rate falls to ``1/sqrt(2)`` of ``lr`` (``lr / sqrt(1 + step / 64)``, see
#: :func:`scheduled_lr`): a constant rate keeps pushing an image's largest values into the squash's flat ends,
#: so the share of saturated pixels grows with every step.
DEFAULT_LR_DECAY_STEPS = 64.0

OptimizerArg = Union[
    None, torch.optim.Optimizer, Type[torch.optim.Optimizer], Callable[[List[torch.Tensor]], torch.optim.Optimizer]
]


def model_input_channels(model: Optional[nn.Module], default: int = 3) -> int:
    """The number of channels ``model`` reads: the ``in_channels`` of its first ``nn.Conv2d`` (definition order).

    Renders use it to build their default image, so a model whose first layer takes 1 channel (grayscale) or 4
    (RGB + depth, RGBA) renders with the defaults.

    Args:
        model: the network (``None``: ``default``).
        default: the answer for a model with no ``Conv2d`` (a transformer, an MLP).

    Returns:
        The channel count.

    Example:
        >>> model_input_channels(nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)))
        1
        >>> model_input_channels(nn.Linear(4, 2))
        3
    """
    if model is None:
        return default
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return default if first is None else int(first.in_channels)


def default_image(
    size: Union[int, Sequence[int]] = DEFAULT_SIZE,
    channels: int = 3,
    batch: int = 1,
    init: Optional[torch.Tensor] = None,
    *,
    decay_power: Optional[float] = None,
) -> nn.Module:
    """The image parameterization every render uses when none is given.

    Args:
        size: ``(height, width)`` or one int for a square (ignored with ``init``).
        channels: 3 (RGB), 4 (RGBA: the fourth channel passes the colour decorrelation untouched), or any
            other count (1 for grayscale): then no colour decorrelation, which is defined for RGB only. Renders
            take it from the model (:func:`model_input_channels`).
        batch: number of images.
        init: an image in ``[0, 1]`` (CHW or NCHW) to start from.
        decay_power: exponent of the ``FFTImage``'s 1/f spectrum scaling. Default: ``DEFAULT_DECAY_POWER``
            from noise, and Lucid's 1 with ``init``: a steeper scaling speeds up the low frequencies, which
            helps a render from noise find object-scale shapes but washes out a photo one starts from.

    Returns:
        A ``NaturalImage`` (Fourier parameterization, KLT colour decorrelation for 3 or 4 channels, and
        ``AlgebraicSigmoid``: a squash whose ends are reached slowly, so colours do not clip into flat fields).

    Raises:
        TypeError: a ``size`` that is neither an int nor a sequence (a str such as ``"64"``).

    Example:
        >>> default_image(32, batch=2)().shape
        torch.Size([2, 3, 32, 32])
        >>> gray = default_image(32, channels=1)
        >>> gray().shape, type(gray.decorrelate).__name__
        (torch.Size([1, 1, 32, 32]), 'Identity')
    """
    from ..images import AlgebraicSigmoid, FFTImage, NaturalImage, ToRGB

    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if decay_power is None:
        decay_power = DEFAULT_DECAY_POWER if init is None else 1.0
    fft = functools.partial(FFTImage, decay_power=decay_power)
    n_channels = int(init.shape[-3]) if isinstance(init, torch.Tensor) and init.dim() in (3, 4) else channels
    decorrelation = ToRGB("klt") if n_channels in (3, 4) else None
    return NaturalImage(size, channels=channels, batch=batch, init=init, parameterization=fft,
                        squash_func=AlgebraicSigmoid(), decorrelation_module=decorrelation)


def default_transforms() -> nn.Module:
    """The transforms every render uses when none are given: captum's ``TransformationRobustness`` with content
    magnified or shrunk by a factor in ``DEFAULT_SCALE`` (captum's list shrinks only), keeping the image's size
    (``crop_or_pad_output=True``).

    The model sees the image at the size it was rendered at, so a model with a fixed input size (a ViT: its
    position embeddings) or one that needs a multiple of its patch (timm's ``dynamic_img_size=True``) renders
    with the defaults at its native size. captum's stack (``TransformationRobustness()``) returns the image 4 px
    larger, which such models refuse.

    Returns:
        A fresh transform module.

    Example:
        >>> default_transforms()(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 3, 32, 32])
    """
    from ..transforms import TransformationRobustness

    return TransformationRobustness(scale=DEFAULT_SCALE, crop_or_pad_output=True)


def check_lr(lr: Any) -> float:
    """Validate a learning rate: a finite number >= 0.

    Example:
        >>> check_lr("0.1")
        Traceback (most recent call last):
        ...
        TypeError: lr must be a finite number >= 0, got '0.1' (str)
    """
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise TypeError(f"lr must be a finite number >= 0, got {lr!r} ({type(lr).__name__})")
    if not math.isfinite(lr) or lr < 0:
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    return float(lr)


def scheduled_lr(lr: float, step: int, decay_steps: Optional[float] = DEFAULT_LR_DECAY_STEPS) -> float:
    """The learning rate of step ``step`` (counted from 0 over a whole render): ``lr / sqrt(1 + step / decay_steps)``.

    The inverse square-root decay keeps early steps fast and slows late ones without ever stopping a long render
    (at 512 steps the rate is a third of ``lr``); ``decay_steps=None`` keeps ``lr`` constant.

    Example:
        >>> [round(scheduled_lr(0.025, s), 4) for s in (0, 64, 192)]
        [0.025, 0.0177, 0.0125]
        >>> scheduled_lr(0.025, 500, None)
        0.025
    """
    if decay_steps is None:
        return lr
    return lr / math.sqrt(1.0 + step / check_lr_decay_steps(decay_steps))


def check_lr_decay_steps(decay_steps: Any) -> Optional[float]:
    """Validate a learning-rate decay length: a finite number > 0, or ``None`` (constant rate).

    Example:
        >>> check_lr_decay_steps(0)
        Traceback (most recent call last):
        ...
        ValueError: lr_decay_steps must be a finite number > 0 or None, got 0
    """
    if decay_steps is None:
        return None
    if isinstance(decay_steps, bool) or not isinstance(decay_steps, (int, float)):
        raise TypeError(f"lr_decay_steps must be a finite number > 0 or None, got {decay_steps!r} "
                        f"({type(decay_steps).__name__})")
    if not math.isfinite(decay_steps) or decay_steps <= 0:
        raise ValueError(f"lr_decay_steps must be a finite number > 0 or None, got {decay_steps!r}")
    return float(decay_steps)


def schedules_lr(optimizer: "OptimizerArg") -> bool:
    """Whether a render's learning rate follows ``lr`` and :func:`scheduled_lr` for this ``optimizer=`` argument:
    yes for ``None`` (AdamW) and an optimizer class (also ``functools.partial`` of one without ``lr``); no for an
    instance or a factory, whose rate is the user's.

    Example:
        >>> schedules_lr(None), schedules_lr(torch.optim.SGD), schedules_lr(lambda p: torch.optim.SGD(p, lr=0.1))
        (True, True, False)
        >>> schedules_lr(functools.partial(torch.optim.SGD, momentum=0.9))
        True
    """
    if isinstance(optimizer, functools.partial) and "lr" not in optimizer.keywords:
        optimizer = optimizer.func  # partial(SGD, momentum=0.9) is a class with other defaults: lr is still ours
    return optimizer is None or (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer))


def _default_optimizer(params: List[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    # The fused kernel is several times faster per step on CPU and GPU; older builds lack it.
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=DEFAULT_WEIGHT_DECAY, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=DEFAULT_WEIGHT_DECAY)


def _steps_without_closure(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    # A render takes one gradient per step and calls step() without a closure; an optimizer that must re-evaluate
    # the loss itself (LBFGS) would fail inside torch on the first step.
    closure = inspect.signature(optimizer.step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        raise TypeError(
            f"optimizer {type(optimizer).__name__} needs a closure in step(closure) (it re-evaluates the loss "
            "itself); renders take one gradient per step: use Adam, AdamW, SGD or another first-order optimizer"
        )
    return optimizer


def starts_from_photo(image: nn.Module) -> bool:
    """Whether an image parameterization (or any module holding one) was built from an ``init`` image rather
    than from noise: such a render defaults to ``PHOTO_START_OPTIMIZER``.

    Any ``init`` counts (an earlier render given as ``init`` too), and one part built from ``init`` is enough: a
    ``StackImage`` of a photo and a noise image renders both with plain Adam. A TorchScript-compiled image keeps
    no record of its ``init`` and counts as noise.

    Raises:
        TypeError: ``image`` is not a module (a photo tensor: ``default_image(init=photo)`` is the image).

    Example:
        >>> starts_from_photo(default_image(16)), starts_from_photo(default_image(init=torch.rand(3, 16, 16)))
        (False, True)
    """
    from ..images.base import built_from_init

    if not isinstance(image, nn.Module):
        raise TypeError(f"image must be an nn.Module (an image parameterization), got {type(image).__name__}")
    return built_from_init(image)


def resolve_average(average: Optional[float], image: Optional[nn.Module] = None) -> float:
    """The one rule for a render's ``average=``: ``None`` means ``DEFAULT_AVERAGE`` (weighted towards the last sixth)
    for an image from noise and 0 (the last image) for one that starts from a photo (:func:`starts_from_photo`: an
    average would pull the result back towards the photo); a number is checked (a fraction in ``[0, 0.5]``) and
    used.

    Args:
        average: the ``average=`` argument of a render.
        image: the render's image parameterization; ``None`` for renders that always start from noise (a job's).

    Raises:
        TypeError, ValueError: see :func:`~optim.optimization.averaging.check_average`.

    Example:
        >>> round(resolve_average(None), 4), resolve_average(0.25, default_image(16))
        (0.1667, 0.25)
        >>> resolve_average(None, default_image(16, init=torch.rand(3, 16, 16)))
        0.0
    """
    checked = check_average(average)
    if checked is not None:
        return checked
    return 0.0 if image is not None and starts_from_photo(image) else DEFAULT_AVERAGE


def check_residual_gradient(factor: Any) -> Optional[float]:
    """Validate a render's ``residual_gradient=``: a number in ``[0, 1]`` (1: the model's true gradient), or
    ``None`` (the default).

    Example:
        >>> check_residual_gradient(1.5)
        Traceback (most recent call last):
        ...
        ValueError: residual_gradient must be a number in [0, 1] (1: the true gradient) or None, got 1.5
    """
    if factor is None:
        return None
    if isinstance(factor, bool) or not isinstance(factor, (int, float)):
        raise TypeError(f"residual_gradient must be a number in [0, 1] (1: the true gradient) or None, got "
                        f"{factor!r} ({type(factor).__name__})")
    if not 0.0 <= factor <= 1.0:  # NaN fails too
        raise ValueError(f"residual_gradient must be a number in [0, 1] (1: the true gradient) or None, got {factor!r}")
    return float(factor)


def resolve_residual_gradient(factor: Optional[float], image: Optional[nn.Module] = None) -> float:
    """The one rule for a render's ``residual_gradient=``: ``None`` means ``DEFAULT_RESIDUAL_GRADIENT`` for an
    image from noise and 1 (the true gradient) for one that starts from a photo (:func:`starts_from_photo`), as
    for ``average``; a number is checked and used.

    Example:
        >>> resolve_residual_gradient(None), resolve_residual_gradient(None, default_image(8, init=torch.rand(3, 8, 8)))
        (0.25, 1.0)
    """
    checked = check_residual_gradient(factor)
    if checked is not None:
        return checked
    return 1.0 if image is not None and starts_from_photo(image) else DEFAULT_RESIDUAL_GRADIENT


def make_optimizer(
    optimizer: OptimizerArg, params: Iterable[torch.Tensor], lr: float = DEFAULT_LR, *, from_photo: bool = False
) -> torch.optim.Optimizer:
    """The one optimizer normalisation: what every entry point's ``optimizer=`` argument may be.

    Args:
        optimizer: ``None`` for ``AdamW(weight_decay=DEFAULT_WEIGHT_DECAY)`` (fused where available; with
            ``from_photo``, ``PHOTO_START_OPTIMIZER``), an optimizer class (built with ``lr``), a function
            ``params -> optimizer`` (Lucent's ``optimizer`` argument), or an instance over ``params`` (used as is;
            ``lr`` is then ignored).
        params: the tensors to optimize.
        lr: the learning rate for ``None`` and a class.
        from_photo: the render starts from a photo (:func:`starts_from_photo`): the default is then plain Adam,
            whose steps do not fade the photo towards grey.

    Returns:
        A ``torch.optim.Optimizer``.

    Raises:
        TypeError: for anything else, a factory that returns no optimizer, or an optimizer whose ``step`` needs a
            closure (LBFGS); ValueError for a bad ``lr``.

    Example:
        >>> p = [torch.zeros(2, requires_grad=True)]
        >>> type(make_optimizer(torch.optim.SGD, p, lr=0.1)).__name__, make_optimizer(None, p).defaults["lr"]
        ('SGD', 0.025)
        >>> type(make_optimizer(None, p)).__name__, make_optimizer(None, p).defaults["weight_decay"]
        ('AdamW', 0.5)
        >>> type(make_optimizer(None, p, from_photo=True)).__name__
        'Adam'
    """
    params = list(params)
    if isinstance(optimizer, torch.optim.Optimizer):
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if any(id(p) not in held for p in params):
            raise ValueError(
                "the optimizer instance does not hold the image's parameters (it was built over other tensors); "
                "pass an optimizer class or a function params -> optimizer instead"
            )
        return _steps_without_closure(optimizer)
    lr = check_lr(lr)
    if optimizer is None and from_photo:
        optimizer = PHOTO_START_OPTIMIZER
    if optimizer is None:
        return _default_optimizer(params, lr)
    if isinstance(optimizer, type):
        if issubclass(optimizer, torch.optim.Optimizer):
            return _steps_without_closure(optimizer(params, lr=lr))
        raise TypeError(f"optimizer must be a torch.optim.Optimizer class, got {optimizer.__name__}")
    if callable(optimizer):
        built = optimizer(params)
        if not isinstance(built, torch.optim.Optimizer):
            raise TypeError(f"the optimizer factory must return a torch.optim.Optimizer, got {type(built).__name__}")
        return _steps_without_closure(built)
    raise TypeError(
        "optimizer must be None, a torch.optim.Optimizer, an Optimizer class or a function of the parameters, "
        f"got {type(optimizer).__name__}"
    )
