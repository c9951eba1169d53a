"""The gRPC contract from a client's side: statuses, messages that name the field, idempotence."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
import pytest

from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from tests.server import ServerThread, namespaces_pb

ACTIONS = [
    pb.Action(id=f"a{i}", features=namespaces_pb({"Action": {"kind": f"k{i}"}})) for i in range(3)
]
CONTEXT = namespaces_pb({"User": {"segment": "x", "age": 31.0, "mobile": True}})


def _create(server: ServerThread, name: str = "exp", **fields: object) -> pb.Experiment:
    return server.experiments.CreateExperiment(
        pb.CreateExperimentRequest(experiment=pb.Experiment(name=name, **fields))  # type: ignore[arg-type]
    )


def _decision_count(server: ServerThread) -> int:
    with sqlite3.connect(server.settings.data_dir / "decisions.sqlite3") as db:
        return int(db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])


def _code_and_details(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code(), info.value.details()


BAD_RANKS = [
    (pb.RankRequest(experiment="exp", context=CONTEXT), "actions", "no actions"),
    (
        pb.RankRequest(experiment="exp", actions=[ACTIONS[0], pb.Action(id="a0")]),
        "actions[1].id",
        "'a0' repeats actions[0].id",
    ),
    (
        pb.RankRequest(experiment="exp", actions=ACTIONS[:2], excluded_action_ids=["a0", "a1"]),
        "excluded_action_ids",
        "all 2 actions are excluded",
    ),
    (
        pb.RankRequest(experiment="exp", actions=ACTIONS, excluded_action_ids=["zz"]),
        "excluded_action_ids[0]",
        "'zz' is not among the actions",
    ),
    (
        pb.RankRequest(
            experiment="exp", actions=ACTIONS, context=[pb.Namespace(name="", features=[])]
        ),
        "context[0].name",
        "namespace name is empty",
    ),
    (
        pb.RankRequest(
            experiment="exp",
            actions=ACTIONS,
            context=[
                pb.Namespace(
                    name="User",
                    features=[
                        pb.Feature(name="f", number_value=1),
                        pb.Feature(name="f", number_value=2),
                    ],
                )
            ],
        ),
        "context[0].features[1].name",
        "'f' repeats",
    ),
    (
        pb.RankRequest(
            experiment="exp",
            actions=ACTIONS,
            context=[
                pb.Namespace(
                    name="User", features=[pb.Feature(name="f", number_value=float("nan"))]
                )
            ],
        ),
        "context[0].features[0].number_value",
        "nan is not a finite number",
    ),
    (
        pb.RankRequest(
            experiment="exp",
            actions=[pb.Action(id="a", features=[pb.Namespace(name="_x")])],
        ),
        "actions[0].features[0].name",
        "starts with '_'",
    ),
    (pb.RankRequest(experiment="bad name!", actions=ACTIONS), "experiment", "'bad name!'"),
]


@pytest.mark.parametrize(("request_", "field", "phrase"), BAD_RANKS)
def test_bad_rank_is_invalid_argument_naming_field_and_logs_nothing(
    server: ServerThread, request_: pb.RankRequest, field: str, phrase: str
) -> None:
    """Each malformed Rank gets INVALID_ARGUMENT naming the field and value; nothing is logged."""
    _create(server)
    code, details = _code_and_details(lambda: server.bandit.Rank(request_))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(field + ":"), details
    assert phrase in details
    assert _decision_count(server) == 0


def test_a_rank_with_more_actions_than_max_actions_is_refused_before_any_work(
    tmp_path: Path,
) -> None:
    """A Rank runs on the event loop: one with thousands of actions would hold up every other
    call (5,000 took ~0.4 s), so the server caps them (setting max_actions)."""
    server = ServerThread(tmp_path / "data", max_actions=3).start()
    try:
        _create(server)
        four = [*ACTIONS, pb.Action(id="a3")]
        code, details = _code_and_details(
            lambda: server.bandit.Rank(pb.RankRequest(experiment="exp", actions=four))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details == "actions: 4 actions, more than this server's max_actions (3)"
        assert _decision_count(server) == 0
        server.bandit.Rank(pb.RankRequest(experiment="exp", actions=ACTIONS))
        assert _decision_count(server) == 1
    finally:
        server.stop()


def test_an_explorer_whose_cost_explodes_with_actions_caps_them(server: ServerThread) -> None:
    """--graph_feedback took ~12 s to rank 100 actions, holding up every call meanwhile: its
    experiments take at most 10 candidates (after exclusions), and say why."""
    _create(server, vw_args="--cb_explore_adf --graph_feedback")
    eleven = [pb.Action(id=f"g{i}", features=namespaces_pb({"A": {"k": i}})) for i in range(11)]
    code, details = _code_and_details(
        lambda: server.bandit.Rank(pb.RankRequest(experiment="exp", actions=eleven))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == (
        "actions: 11 candidate actions, more than 10, the most this experiment's "
        "--graph_feedback allows (its cost grows far faster than the actions)"
    )
    assert _decision_count(server) == 0
    response = server.bandit.Rank(
        pb.RankRequest(experiment="exp", actions=eleven, excluded_action_ids=["g3"])
    )
    assert len(response.ranking) == 10
    _create(server, name="plain", vw_args="--cb_explore_adf --squarecb")
    plain = server.bandit.Rank(pb.RankRequest(experiment="plain", actions=eleven))
    assert len(plain.ranking) == 11


def test_unknown_experiment_and_event_are_not_found(server: ServerThread) -> None:
    """Rank on an unknown experiment and Reward/Activate for an unknown event are NOT_FOUND."""
    _create(server)
    code, _ = _code_and_details(
        lambda: server.bandit.Rank(pb.RankRequest(experiment="nope", actions=ACTIONS))
    )
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = _code_and_details(
        lambda: server.bandit.Reward(pb.RewardRequest(experiment="exp", event_id="e", value=1))
    )
    assert code == grpc.StatusCode.NOT_FOUND and "'e'" in details
    code, _ = _code_and_details(
        lambda: server.bandit.Activate(pb.ActivateRequest(experiment="exp", event_id="e"))
    )
    assert code == grpc.StatusCode.NOT_FOUND


def test_non_finite_reward_is_rejected_and_not_logged(server: ServerThread) -> None:
    """A NaN or infinite reward is INVALID_ARGUMENT naming `value`; no reward row is written."""
    _create(server)
    ranked = server.bandit.Rank(pb.RankRequest(experiment="exp", actions=ACTIONS))
    for bad in (float("nan"), float("inf")):
        code, details = _code_and_details(
            lambda bad=bad: server.bandit.Reward(
                pb.RewardRequest(experiment="exp", event_id=ranked.event_id, value=bad)
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("value:")
    with sqlite3.connect(server.settings.data_dir / "decisions.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM rewards").fetchone()[0] == 0


def test_numbers_vw_cannot_learn_from_safely_are_rejected_and_change_nothing(
    server: ServerThread,
) -> None:
    """Past 1e30 VW's 32-bit floats overflow (NaN probabilities, or --synthcover never returns),
    and past ~1e19 --regcb breaks on rewards: such a feature value (over 1e30) or reward (over
    1e15) is INVALID_ARGUMENT naming the field, nothing is logged, the experiment keeps serving."""
    _create(server, vw_args="--cb_explore_adf --squarecb -q UA")
    ranked = server.bandit.Rank(pb.RankRequest(experiment="exp", actions=ACTIONS))
    for bad in (1e39, -3e38, 1.0000001e30):  # past both limits
        code, details = _code_and_details(
            lambda bad=bad: server.bandit.Reward(
                pb.RewardRequest(experiment="exp", event_id=ranked.event_id, value=bad)
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("value:")
        assert repr(bad) in details
        big = [pb.Namespace(name="User", features=[pb.Feature(name="n", number_value=bad)])]
        code, details = _code_and_details(
            lambda big=big: server.bandit.Rank(
                pb.RankRequest(experiment="exp", context=big, actions=ACTIONS)
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.startswith("context[0].features[0].number_value:")
    with sqlite3.connect(server.settings.data_dir / "decisions.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM rewards").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 1
    server.bandit.Reward(pb.RewardRequest(experiment="exp", event_id=ranked.event_id, value=1e15))
    again = server.bandit.Rank(pb.RankRequest(experiment="exp", actions=ACTIONS))
    assert abs(sum(a.probability for a in again.ranking) - 1) < 1e-9


def test_numbers_whose_interacted_products_vw_cannot_hold_are_rejected(
    server: ServerThread,
) -> None:
    """With -q :: VW multiplies pairs of values (a namespace with itself too): each must stay
    within 1e15 so products stay within 1e30. Before, 2e19 made --squarecb predict NaN
    (INTERNAL) and --synthcover never return, stopping the whole server."""
    _create(server, vw_args="--cb_explore_adf --squarecb -q ::")

    def rank(context: list[pb.Namespace], actions: list[pb.Action], **kw: object) -> object:
        request = pb.RankRequest(experiment="exp", context=context, actions=actions, **kw)  # type: ignore[arg-type]
        return server.bandit.Rank(request, timeout=10)

    def number(name: str, value: float) -> list[pb.Namespace]:
        return [pb.Namespace(name=name, features=[pb.Feature(name="n", number_value=value)])]

    code, details = _code_and_details(lambda: rank(number("User", -2e19), ACTIONS))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("context[0].features[0].number_value: -2e+19 is larger")
    assert "interactions" in details
    big_action = pb.Action(id="big", features=number("Action", 1e16))
    code, details = _code_and_details(lambda: rank([], [*ACTIONS, big_action]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(f"actions[{len(ACTIONS)}].features[0].features[0].number_value:")
    assert _decision_count(server) == 0
    ranked = rank(number("User", 1e15), [*ACTIONS, big_action], excluded_action_ids=["big"])
    assert abs(sum(a.probability for a in ranked.ranking) - 1) < 1e-9  # type: ignore[attr-defined]


def test_a_sum_reward_past_the_limit_is_refused_and_the_event_takes_later_rewards(
    server: ServerThread,
) -> None:
    """SUM: the reward that would take an event's total past 1e15 is INVALID_ARGUMENT and not
    logged; the event is not left busy, so the next reward is taken."""
    _create(server, reward_aggregation=pb.REWARD_AGGREGATION_SUM)
    ranked = server.bandit.Rank(pb.RankRequest(experiment="exp", actions=ACTIONS))

    def reward(value: float) -> pb.RewardResponse:
        request = pb.RewardRequest(experiment="exp", event_id=ranked.event_id, value=value)
        return server.bandit.Reward(request, timeout=10)

    reward(6e14)
    code, details = _code_and_details(lambda: reward(6e14))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("value: 600000000000000.0")
    reward(-1e14)
    with sqlite3.connect(server.settings.data_dir / "decisions.sqlite3") as db:
        logged = [row[0] for row in db.execute("SELECT value FROM rewards ORDER BY seq")]
    assert logged == [6e14, -1e14]


def test_experiment_admin_errors(server: ServerThread) -> None:
    """Duplicate create is ALREADY_EXISTS; bad vw_args and names are INVALID_ARGUMENT with VW's
    message; unknown names are NOT_FOUND."""
    _create(server)
    code, _ = _code_and_details(lambda: _create(server))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    code, details = _code_and_details(
        lambda: _create(server, "other", vw_args="--cb_explore_adf --epsilon banana")
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("experiment.vw_args:") and "banana" in details
    code, details = _code_and_details(lambda: _create(server, "other", vw_args="--cb_adf"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "--cb_explore_adf" in details
    code, details = _code_and_details(lambda: _create(server, "9lives"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("experiment.name:")
    code, _ = _code_and_details(lambda: _create(server, "other", reward_wait_seconds=-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = _code_and_details(
        lambda: server.experiments.GetExperiment(pb.GetExperimentRequest(name="missing"))
    )
    assert code == grpc.StatusCode.NOT_FOUND
    names = [
        e.name for e in server.experiments.ListExperiments(pb.ListExperimentsRequest()).experiments
    ]
    assert names == ["exp"]


def test_vw_args_that_crash_vw_are_refused_and_the_server_lives_on(server: ServerThread) -> None:
    """--bag 0 segfaults VW when it builds the model; --ksvm when it saves one. Either used to
    kill the whole server from one CreateExperiment or UpdateExperiment."""
    _create(server)
    for args in ("--cb_explore_adf --bag 0", "--cb_explore_adf --ksvm"):
        code, details = _code_and_details(lambda a=args: _create(server, "other", vw_args=a))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details == (
            f"experiment.vw_args: {args!r} crashes VW (SIGSEGV) while building, using or "
            "saving a model"
        )
        update = pb.Experiment(name="exp", vw_args=args, reward_wait_seconds=1.0)
        code, _ = _code_and_details(
            lambda u=update: server.experiments.UpdateExperiment(
                pb.UpdateExperimentRequest(experiment=u)
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    names = [
        e.name for e in server.experiments.ListExperiments(pb.ListExperimentsRequest()).experiments
    ]
    assert names == ["exp"]
    got = server.experiments.GetExperiment(pb.GetExperimentRequest(name="exp"))
    assert "--bag" not in got.vw_args and "--ksvm" not in got.vw_args


def test_rank_answer_shape_and_idempotence(server: ServerThread) -> None:
    """The ranking lists every candidate once, chosen first, summing to 1; excluded actions are
    absent; a repeated event_id returns the original answer and logs once."""
    _create(server, vw_args="--cb_explore_adf --epsilon 0.3")
    request = pb.RankRequest(
        experiment="exp", event_id="ev-1", context=CONTEXT, actions=ACTIONS,
        excluded_action_ids=["a2"],
    )  # fmt: skip
    first = server.bandit.Rank(request)
    assert first.ranking[0].action_id == first.chosen_action_id
    assert sorted(r.action_id for r in first.ranking) == ["a0", "a1"]
    assert abs(sum(r.probability for r in first.ranking) - 1) < 1e-12
    again = server.bandit.Rank(request)
    assert again == first
    assert _decision_count(server) == 1
    generated = server.bandit.Rank(pb.RankRequest(experiment="exp", actions=ACTIONS))
    assert generated.event_id and generated.event_id != "ev-1"


def test_same_event_id_draws_the_same_action_across_experiments_state(server: ServerThread) -> None:
    """The draw is seeded by (experiment, event_id): a fresh experiment with the same model gives
    the same choice for the same event id."""
    _create(server, "one", vw_args="--cb_explore_adf --epsilon 0.5")
    _create(server, "two", vw_args="--cb_explore_adf --epsilon 0.5")
    chosen_one = [
        server.bandit.Rank(
            pb.RankRequest(experiment="one", event_id=f"e{i}", actions=ACTIONS)
        ).chosen_action_id
        for i in range(40)
    ]
    server.experiments.DeleteExperiment(pb.DeleteExperimentRequest(name="one"))
    _create(server, "one", vw_args="--cb_explore_adf --epsilon 0.5")
    again = [
        server.bandit.Rank(
            pb.RankRequest(experiment="one", event_id=f"e{i}", actions=ACTIONS)
        ).chosen_action_id
        for i in range(40)
    ]
    assert again == chosen_one
    assert len(set(chosen_one)) > 1  # the draws really vary between events


def test_model_version_changes_when_the_model_learns(server: ServerThread) -> None:
    """model_version is stable while the model is unchanged and changes once it learns."""
    _create(server)
    a = server.bandit.Rank(pb.RankRequest(experiment="exp", actions=ACTIONS, context=CONTEXT))
    b = server.bandit.Rank(pb.RankRequest(experiment="exp", actions=ACTIONS, context=CONTEXT))
    assert a.model_version == b.model_version
    server.bandit.Reward(pb.RewardRequest(experiment="exp", event_id=a.event_id, value=1.0))
    c = server.bandit.Rank(pb.RankRequest(experiment="exp", actions=ACTIONS, context=CONTEXT))
    assert c.model_version != a.model_version
    status = server.experiments.GetExperiment(pb.GetExperimentRequest(name="exp"))
    assert status.learned_events == 1 and status.model_version == c.model_version


def test_health_and_reflection_are_served(server: ServerThread) -> None:
    """The standard health service answers SERVING and reflection lists the bandit services."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    health = health_pb2_grpc.HealthStub(server.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="bandit.v1.BanditService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"bandit.v1.BanditService", "bandit.v1.ExperimentService"} <= names
