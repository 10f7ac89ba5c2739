"""Max |rlviz - framework| for each framework's own model classes (issue 27).

Builds the same small models as tests/test_frameworks_*.py (seeded, untrained) and prints, per
framework, the largest absolute difference between rlviz's policy outputs and the framework's own:
logits (or means / Q-values), log pi of given actions, and values.

    .venv/bin/python benchmarks/framework_agreement.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import rlviz  # noqa: E402
from rlviz import PolicyAdapter  # noqa: E402


def gap(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


def tianshou():
    import test_frameworks_tianshou as t
    from framework_helpers import stacked_obs

    actor, critic = t._actor_critic()
    obs = stacked_obs(3)
    adapter = PolicyAdapter.from_tianshou(actor, critic, layout="4x1:CHW")
    x = torch.as_tensor(obs, dtype=torch.float32)
    probs, value = actor(x)[0], critic(x)[:, 0]
    out = adapter(obs)
    return gap(out.probs, probs), gap(out.log_probs, probs.log()), gap(out.value, value)


def skrl():
    import test_frameworks_skrl as t
    from framework_helpers import stacked_obs

    model, obs = t._model(), stacked_obs(3)
    adapter = PolicyAdapter.from_skrl(model, model, layout="4x1:CHW")
    taken = torch.tensor([[0], [2], [1]])
    _, extra = model.act({**t._skrl_inputs(obs), "taken_actions": taken}, role="policy")
    value = model.act(t._skrl_inputs(obs), role="value")[0][:, 0]
    out = adapter(obs)
    log_pi = rlviz.TakenAction(taken[:, 0])(out)
    return (
        gap(out.logits, extra["net_output"]),
        gap(log_pi, extra["log_prob"][:, 0]),
        gap(out.value, value),
    )


def torchrl():
    import test_frameworks_torchrl as t
    from framework_helpers import stacked_obs
    from tensordict import TensorDict

    avo, obs = t._actor_value_operator(), stacked_obs(3)
    adapter = PolicyAdapter.from_torchrl(avo, layout="4x1:CHW")
    td = TensorDict({"pixels": t._torchrl_pixels(obs)}, batch_size=[3])
    policy_td = avo.get_policy_operator()(td.clone())
    dist = avo.get_policy_operator().get_dist(td.clone())
    value = avo.get_value_operator()(td.clone())["state_value"][:, 0]
    out = adapter(obs)
    log_pi = rlviz.TakenAction(policy_td["action"].argmax(-1))(out)
    return (
        gap(out.logits, policy_td["logits"]),
        gap(log_pi, dist.log_prob(policy_td["action"])),
        gap(out.value, value),
    )


def rllib():
    import test_frameworks_rllib as t
    from framework_helpers import stacked_obs

    module, obs = t._module(), t._hwc(stacked_obs(3))
    adapter = PolicyAdapter.from_rllib(module, layout="4x1:HWC")
    batch = {"obs": torch.as_tensor(obs, dtype=torch.float32)}
    logits = module.forward_inference(batch)["action_dist_inputs"]
    dist = module.get_inference_action_dist_cls().from_logits(logits)
    taken = torch.tensor([0, 2, 1])
    out = adapter(obs)
    return (
        gap(out.logits, logits),
        gap(rlviz.TakenAction(taken)(out), dist.logp(taken)),
        gap(out.value, module.compute_values(batch)),
    )


def sb3(name: str):
    import test_frameworks_sb3 as t

    if name in ("DQN", "QRDQN"):
        venv = t._stacked_car()
        model = t.model_of(name, env=venv)
        obs = venv.reset()
        tensor = model.policy.obs_to_tensor(obs)[0]
        q = model.q_net(tensor) if name == "DQN" else model.policy.quantile_net(tensor).mean(1)
        out = PolicyAdapter.from_sb3(model)(obs)
        return gap(out.logits, q), float("nan"), gap(out.value, q.max(-1).values)
    model, obs = t.model_of(name), t.car_obs(2)
    tensor = model.policy.obs_to_tensor(obs)[0]
    actions = torch.tensor([[0.3, 0.1, -0.2], [-0.5, 0.9, 0.0]])
    out = PolicyAdapter.from_sb3(model)(obs)
    if name == "SAC":
        mean, log_std, _ = model.actor.get_action_dist_params(tensor)
        log_pi = model.actor.action_dist.proba_distribution(mean, log_std).log_prob(actions)
        q1 = model.critic.q1_forward(tensor, torch.tanh(mean))[:, 0]
        return gap(out.mean, mean), gap(rlviz.TakenAction(actions)(out), log_pi), gap(out.value, q1)
    if name == "TD3":
        action = model.actor(tensor)
        return gap(out.mean, action), float("nan"), gap(out.value, model.critic.q1_forward(tensor, action)[:, 0])
    values, log_pi, _ = model.policy.evaluate_actions(tensor, actions)
    mean = model.policy.get_distribution(tensor).distribution.mean
    return gap(out.mean, mean), gap(rlviz.TakenAction(actions)(out), log_pi), gap(out.value, values[:, 0])


def main() -> None:
    rows = [
        ("Tianshou DiscreteActor+DiscreteCritic (probs)", tianshou),
        ("skrl Categorical+Deterministic shared model", skrl),
        ("TorchRL ActorValueOperator (OneHotCategorical)", torchrl),
        ("RLlib DefaultPPOTorchRLModule (Catalog CNN)", rllib),
        *[(f"SB3 {n}", lambda n=n: sb3(n)) for n in ("PPO", "A2C", "SAC", "TD3", "DQN", "QRDQN")],
    ]
    print(f"{'framework':48s} {'logits/mean/Q':>14s} {'log pi(a|s)':>12s} {'value':>10s}")
    with torch.no_grad():
        for name, fn in rows:
            a, b, c = fn()
            print(f"{name:48s} {a:14.2e} {b:12.2e} {c:10.2e}")


if __name__ == "__main__":
    main()
