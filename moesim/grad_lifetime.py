"""When a training step's gradients are alive, and so whether they meet the forward's activations. Pure functions.

Megatron-core and DeepSpeed keep their gradients in buffers allocated once (``plan.grad_buffers: persistent``, the
default): they sit beside everything else for the whole step, and the memory report adds them to the activations.
Plain PyTorch keeps them in ``.grad`` tensors that the backward creates and ``optimizer.zero_grad()`` drops
(``set_to_none=True``, its default since torch 2.0: torchtune's single-device recipes, Hugging Face's Trainer on one
GPU): ``transient``; DistributedDataParallel keeps its gradient buckets all step (persistent). With one micro-batch
a step the forward then runs with no gradient alive, and the backward creates them as it frees the activations it
has used, so the step's peak is the larger of two moments:

- the loss: the stored activations and the logits (or the recompute working set), no gradient yet;
- the backward's end: every gradient and the working set of the first layer's recompute, the stored activations
  spent (for uniform layers gradients grow as the stored inputs shrink, so the sum peaks at one end or the other).

With more micro-batches the gradients accumulate from the first backward through the later forwards, and with a
pipeline other micro-batches' forwards run while they exist: both as persistent. ``plan.optimizer_in_backward``
(torchtune's ``optimizer_in_bwd``: each parameter's Adam step runs in its post-accumulate-grad hook, which then frees
its gradient) leaves one parameter's gradient alive at a time, the largest one at most.
"""

from __future__ import annotations

from moesim.schemas import ModelSpec, PlanSpec


def grads_meet_forward(plan: PlanSpec) -> bool:
    """Whether the step's gradients are alive during a forward: persistent buffers, or several micro-batches a
    step (accumulation), or a pipeline (other micro-batches' forwards run during the backward)."""
    return plan.grad_buffers == "persistent" or plan.microbatches > 1 or plan.pp > 1


def largest_grad_bytes(m: ModelSpec, plan: PlanSpec, grad_bytes: float, embeddings_train: bool) -> float:
    """Bytes of the largest single gradient one device holds: the embedding's or the head's ``vocab x d_model``
    when they train, else one FFN or expert matrix (``d_model x`` the wider FFN), split over TP."""
    ffn = max(m.ffn_hidden, m.expert_width, m.n_heads * m.head_width)
    biggest = max(m.vocab_size if embeddings_train else 0, ffn) * m.d_model
    return biggest * grad_bytes / plan.tp


def transient_peak(grads: float, acts: float, work: float, live_grads: float) -> tuple[float, float]:
    """(gradient, activation) bytes at the peak of a one-micro-batch step whose gradients are transient: the loss's
    moment (``acts``: stored activations and the logits or working set, no gradient) or the backward's end
    (``live_grads``, at most ``grads``, beside ``work``, the first layer's recompute working set), the larger."""
    live = min(grads, live_grads)
    return (0.0, acts) if acts >= live + work else (live, work)
