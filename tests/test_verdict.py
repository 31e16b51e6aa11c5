"""Verdict logic on constructed attack scores whose truth is known."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from audit.verdict import VerdictConfig, attack_margins, judge, site_margins, spread_factor


@dataclass
class Scores:
    attack: str
    recovered: dict[int, float] = field(default_factory=dict)


CASES = list(range(12))


def _oracle(rng: np.random.Generator, level: float = 0.2, spread: float = 0.03) -> list[Scores]:
    return [Scores(name, {c: float(np.clip(level + spread * rng.standard_normal(), 0, 1)) for c in CASES})
            for name in ("probe", "logit_lens")]


def test_recalled_targets_are_intact_whatever_the_attacks_say():
    rng = np.random.default_rng(0)
    oracle = _oracle(rng)
    edited = [Scores(o.attack, dict(o.recovered)) for o in oracle]  # attacks find nothing beyond the oracle
    verdicts = judge(CASES, {c: c < 4 for c in CASES}, edited, oracle)
    by_case = verdicts.by_case()
    assert [by_case[c].verdict for c in range(4)] == ["intact"] * 4
    assert all(by_case[c].verdict == "erased" for c in range(4, 12))
    assert verdicts.counts() == {"erased": 8, "suppressed": 0, "intact": 4}


def test_recovery_beyond_the_oracle_is_suppressed_and_names_the_attack():
    rng = np.random.default_rng(1)
    oracle = _oracle(rng)
    edited = [Scores(o.attack, dict(o.recovered)) for o in oracle]
    edited[1].recovered[5] = 0.9  # logit lens finds target 5; the probe finds nothing on it
    edited[0].recovered[7] = edited[0].recovered[7] + 0.5
    verdicts = judge(CASES, {}, edited, oracle)
    by_case = verdicts.by_case()
    assert by_case[5].verdict == "suppressed" and by_case[5].attack == "logit_lens"
    assert by_case[5].recovered == pytest.approx(0.9)
    assert by_case[5].excess == pytest.approx(0.9 - oracle[1].recovered[5])
    assert by_case[7].verdict == "suppressed" and by_case[7].attack == "probe"
    assert {c for c in CASES if by_case[c].verdict == "erased"} == set(CASES) - {5, 7}
    assert "logit_lens" in by_case[5].reason


def test_a_high_score_the_oracle_also_gets_is_not_recovery():
    oracle = [Scores("probe", {c: 0.8 for c in CASES})]  # the attribute is guessable: the oracle decodes it too
    edited = [Scores("probe", {c: 0.85 for c in CASES})]
    verdicts = judge(CASES, {}, edited, oracle)
    assert verdicts.counts()["erased"] == len(CASES)


def test_margin_grows_with_the_oracles_spread():
    rng = np.random.default_rng(2)
    narrow = attack_margins(_oracle(rng, spread=0.01), CASES, VerdictConfig(margin=0.05, spread_k=3.0))
    wide = attack_margins(_oracle(rng, spread=0.2), CASES, VerdictConfig(margin=0.05, spread_k=3.0))
    assert narrow["probe"] == pytest.approx(0.05)  # the floor wins when the oracle is steady
    assert wide["probe"] > 0.3
    # an excess of 0.2 is recovery under a steady oracle and noise under a noisy one
    for margins, expected in ((narrow, "suppressed"), (wide, "erased")):
        level = 0.2
        oracle = [Scores("probe", {c: level for c in CASES})]
        edited = [Scores("probe", {c: level + 0.2 for c in CASES})]
        config = VerdictConfig(margin=margins["probe"], spread_k=0.0)
        assert judge(CASES, {}, edited, oracle, config=config).counts()[expected] == len(CASES)


def test_without_an_oracle_the_null_or_the_absolute_threshold_decides():
    edited = [Scores("keyword", {0: 0.9, 1: 0.3, 2: 0.05})]
    absolute = judge([0, 1, 2], {}, edited, None, config=VerdictConfig(absolute_threshold=0.5))
    assert [absolute.by_case()[c].verdict for c in (0, 1, 2)] == ["suppressed", "erased", "erased"]
    assert absolute.reference_kind == "absolute"
    null = judge([0, 1, 2], {}, edited, None, null={"keyword": [0.0, 0.02, 0.04, 0.1]},
                 config=VerdictConfig(margin=0.1, null_quantile=0.95))
    assert [null.by_case()[c].verdict for c in (0, 1, 2)] == ["suppressed", "suppressed", "erased"]
    assert null.reference_kind == "null"


def test_missing_oracle_attack_is_an_error():
    with pytest.raises(ValueError, match="oracle was not attacked"):
        judge([0], {}, [Scores("probe", {0: 0.5})], [Scores("keyword", {0: 0.1})])


@dataclass
class SiteScores:
    attack: str
    recovered: dict[int, float]
    sites: dict[str, dict[int, float]]


def _site_oracle(rng: np.random.Generator, n_sites: int, n: int = 40) -> dict[str, dict[int, float]]:
    return {f"depth {d}": {c: float(np.clip(0.1 + 0.05 * rng.standard_normal(), 0, 1)) for c in range(n)}
            for d in range(n_sites)}


def test_several_sites_take_the_largest_excess_and_name_its_site():
    rng = np.random.default_rng(3)
    cases = list(range(40))
    oracle_sites = _site_oracle(rng, 7)
    edited_sites = {s: dict(v) for s, v in oracle_sites.items()}
    edited_sites["depth 5"][3] = 0.9  # one depth holds target 3; the headline (another depth) does not
    edited_sites["depth 2"][3] = oracle_sites["depth 2"][3] + 0.3
    headline = dict(oracle_sites["depth 6"])
    edited = [SiteScores("probe", headline, edited_sites)]
    oracle = [SiteScores("probe", dict(oracle_sites["depth 6"]), oracle_sites)]
    verdicts = judge(cases, {}, edited, oracle).by_case()
    assert verdicts[3].verdict == "suppressed" and verdicts[3].site == "depth 5"
    assert verdicts[3].excess == pytest.approx(0.9 - oracle_sites["depth 5"][3])
    assert "at depth 5" in verdicts[3].reason
    assert all(verdicts[c].verdict == "erased" for c in cases if c != 3)
    # the headline alone (no sites) misses it
    plain = judge(cases, {}, [Scores("probe", headline)], [Scores("probe", dict(oracle_sites["depth 6"]))])
    assert plain.by_case()[3].verdict == "erased"


def test_the_site_margin_grows_with_the_number_of_sites():
    rng = np.random.default_rng(4)
    cases = list(range(40))
    sites = _site_oracle(rng, 12)
    config = VerdictConfig(margin=0.0)
    first = [site_margins({s: sites[s] for s in list(sites)[:k]}, cases, config)["depth 0"] for k in (1, 2, 4, 12)]
    assert all(a < b for a, b in zip(first, first[1:]))
    # one site: the single-site rule, spread_k × σ
    sigma = np.std([sites["depth 0"][c] for c in cases], ddof=1)
    assert first[0] == pytest.approx(config.spread_k * sigma)
    assert spread_factor(3.0, 1) == 3.0 and 4.0 < spread_factor(3.0, 14) < 4.6
    # the same largest-of-S false-alarm rate: Φ(k_S / √2)^S = Φ(k / √2) on independent normal differences
    from statistics import NormalDist

    phi = NormalDist().cdf
    assert 1 - phi(spread_factor(3.0, 12) / np.sqrt(2)) == pytest.approx((1 - phi(3.0 / np.sqrt(2))) / 12)
    # the verdict uses each site's margin and names it
    edited_sites = {s: dict(v) for s, v in sites.items()}
    margins = site_margins(sites, cases, config)
    edited_sites["depth 7"][0] += 0.99 * margins["depth 7"]  # below its 12-site margin: not recovery
    edited_sites["depth 3"][1] += 1.01 * margins["depth 3"]
    verdicts = judge(cases, {}, [SiteScores("probe", sites["depth 0"], edited_sites)],
                     [SiteScores("probe", sites["depth 0"], sites)], config=config)
    assert verdicts.by_case()[0].verdict == "erased" and verdicts.by_case()[1].verdict == "suppressed"
    assert verdicts.by_case()[1].margin == pytest.approx(verdicts.site_margins["probe"]["depth 3"])
    assert verdicts.margins["probe"] == pytest.approx(min(verdicts.site_margins["probe"].values()))


def test_widen_rule_a_second_never_taught_model_never_narrows_the_margin_and_widens_it_by_its_paired_spread():
    rng = np.random.default_rng(5)
    config = VerdictConfig(margin=0.05, spread_k=3.0, peer_rule="widen")
    oracle = _oracle(rng, spread=0.03)
    close = [Scores(o.attack, {c: s + 0.001 * rng.standard_normal() for c, s in o.recovered.items()}) for o in oracle]
    far = [Scores(o.attack, {c: s + 0.2 * rng.standard_normal() for c, s in o.recovered.items()}) for o in oracle]
    single = attack_margins(oracle, CASES, config)
    for peers in ([close], [far], [close, far]):
        widened = attack_margins(oracle, CASES, config, peers)
        assert all(widened[a] >= single[a] for a in single)
    assert attack_margins(oracle, CASES, config, [close]) == single  # a peer within the oracle's spread adds nothing
    widened = attack_margins(oracle, CASES, config, [far])
    for o, f in zip(oracle, far):
        rms = np.sqrt(np.mean([(f.recovered[c] - o.recovered[c]) ** 2 for c in CASES]))
        assert widened[o.attack] == pytest.approx(config.spread_k * rms)
    # an erased model that differs from the oracle as the peer does: suppressed on one oracle, erased with the peer
    verdicts = [judge(CASES, {}, far, oracle, config=config, peers=peers).counts()["erased"] for peers in ([], [far])]
    assert verdicts[0] < len(CASES) == verdicts[1]


def test_peer_margins_per_site_and_a_peer_missing_an_attack_is_an_error():
    rng = np.random.default_rng(6)
    cases = list(range(40))
    sites = _site_oracle(rng, 4)
    config = VerdictConfig(margin=0.0, peer_rule="widen")
    shifted = {s: {c: v + 0.3 for c, v in by_case.items()} for s, by_case in sites.items()}
    single, widened = site_margins(sites, cases, config), site_margins(sites, cases, config, [shifted])
    factor = spread_factor(config.spread_k, len(sites))
    assert all(widened[s] == pytest.approx(max(single[s], factor * 0.3)) for s in sites)
    peer = SiteScores("probe", sites["depth 0"], shifted)
    verdicts = judge(cases, {}, [SiteScores("probe", sites["depth 0"], shifted)],
                     [SiteScores("probe", sites["depth 0"], sites)], config=config, peers=[[peer]])
    assert verdicts.site_margins["probe"] == pytest.approx(widened)
    with pytest.raises(ValueError, match="peer 0 was not attacked with 'logit_lens'"):
        judge(CASES, {}, _oracle(rng), _oracle(rng), peers=[[Scores("probe", {c: 0.1 for c in CASES})]])


def test_replace_rule_the_peers_paired_spread_sets_the_margin_where_scores_are_bimodal_over_targets():
    # an attack that "decodes" half the targets by their answer's prior on every never-taught model: the oracle's
    # spread over targets is ~0.45, but a second never-taught model agrees with it per target within ~0.02
    rng = np.random.default_rng(8)
    prior = {c: 0.9 if c % 2 else 0.0 for c in CASES}
    oracle = [Scores("lens", {c: v + 0.01 * rng.standard_normal() for c, v in prior.items()})]
    peer = [Scores("lens", {c: v + 0.02 * rng.standard_normal() for c, v in prior.items()})]
    replace_rule = VerdictConfig(margin=0.05, pooled=False)  # the margin rule alone (the pooled stage: below)
    widen_rule = VerdictConfig(margin=0.05, peer_rule="widen", pooled=False)
    rms = np.sqrt(np.mean([(peer[0].recovered[c] - oracle[0].recovered[c]) ** 2 for c in CASES]))
    assert attack_margins(oracle, CASES, replace_rule, [peer])["lens"] == pytest.approx(max(0.05, 3 * rms))
    assert attack_margins(oracle, CASES, widen_rule, [peer])["lens"] > 1.0  # σ over targets: nothing can beat it
    # a suppression that leaves 0.4 of the answer on the targets the prior does not give away
    edited = [Scores("lens", {c: v + (0.4 if v == 0.0 else 0.0) for c, v in prior.items()})]
    hidden = [c for c in CASES if prior[c] == 0.0]
    caught = {rule.peer_rule: sum(judge(CASES, {}, edited, oracle, config=rule, peers=[peer]).by_case()[c].verdict
                                  == "suppressed" for c in hidden) for rule in (replace_rule, widen_rule)}
    assert caught == {"replace": len(hidden), "widen": 0}
    # without a peer the rule has nothing to replace σ with
    assert attack_margins(oracle, CASES, replace_rule) == attack_margins(oracle, CASES, widen_rule)
    # the peer itself (another never-taught model) stays erased under the narrower margin
    assert judge(CASES, {}, peer, oracle, config=replace_rule, peers=[peer]).counts()["erased"] == len(CASES)


def test_replace_rule_a_peer_without_a_site_leaves_that_site_on_the_oracles_spread():
    rng = np.random.default_rng(9)
    cases = list(range(40))
    sites = _site_oracle(rng, 3)
    config = VerdictConfig(margin=0.0)
    peer = {"depth 0": {c: v + 0.01 for c, v in sites["depth 0"].items()}}
    margins, alone = site_margins(sites, cases, config, [peer]), site_margins(sites, cases, config)
    assert margins["depth 0"] == pytest.approx(spread_factor(config.spread_k, 3) * 0.01)
    assert all(margins[s] == alone[s] for s in sites if s != "depth 0")
    with pytest.raises(ValueError, match="peer_rule"):
        VerdictConfig(peer_rule="narrow")


def _lens_family(rng: np.random.Generator, n: int = 40, spread: float = 0.2) -> tuple[list, list, list]:
    """An oracle, a peer (another never-taught model) and a second never-taught model: scores that are noise of
    `spread` around a per-target level, as the lens attacks give on never-taught models."""
    level = rng.uniform(0.0, 0.5, n)
    draw = lambda: [Scores("lens", {c: float(level[c] + spread * rng.standard_normal())  # noqa: E731
                                    for c in range(n)})]
    return draw(), draw(), draw()


def test_pooled_stage_calls_a_group_of_weak_recoveries_suppressed_and_names_its_site():
    rng = np.random.default_rng(11)
    oracle, peer, _ = _lens_family(rng)
    cases = list(range(40))
    # every target keeps about 1.5 paired spreads of its answer: no single target beats a 3-spread margin
    spread = np.sqrt(np.mean([(peer[0].recovered[c] - oracle[0].recovered[c]) ** 2 for c in cases]))
    edited = [Scores("lens", {c: oracle[0].recovered[c] + 1.5 * spread for c in cases})]
    plain = judge(cases, {}, edited, oracle, peers=[peer], config=VerdictConfig(pooled=False))
    pooled = judge(cases, {}, edited, oracle, peers=[peer])
    assert plain.counts()["suppressed"] == 0
    assert pooled.counts()["suppressed"] == len(cases)
    assert [(s["attack"], s["site"]) for s in pooled.pooled_sites] == [("lens", None)]
    assert pooled.pooled_sites[0]["mean_excess"] == pytest.approx(1.5 * spread)
    target = pooled.by_case()[0]
    assert "pooled stage" in target.reason and target.margin == pytest.approx(spread)
    # without peers there is no paired spread to test the group against: the stage does not run
    assert judge(cases, {}, edited, oracle).pooled_sites == []


def test_pooled_stage_leaves_a_never_taught_model_and_answered_targets_alone():
    cases = list(range(40))
    for seed in range(20):  # another never-taught model: the group test stays shut (its false alarm ~0.1%)
        oracle, peer, other = _lens_family(np.random.default_rng(100 + seed))
        verdicts = judge(cases, {}, other, oracle, peers=[peer])
        assert verdicts.pooled_sites == [] and verdicts.counts()["erased"] == len(cases), seed
    # answered targets stay intact, and only the unanswered ones enter the group test
    oracle, peer, _ = _lens_family(np.random.default_rng(12))
    edited = [Scores("lens", {c: oracle[0].recovered[c] + (0.9 if c < 20 else 0.0) for c in cases})]
    verdicts = judge(cases, {c: c < 20 for c in cases}, edited, oracle, peers=[peer]).by_case()
    assert all(verdicts[c].verdict == "intact" for c in range(20))
    assert all(verdicts[c].verdict == "erased" for c in range(20, 40))


def test_pooled_null_stage_calls_a_group_of_weak_recoveries_suppressed_against_the_decoys():
    rng = np.random.default_rng(21)
    cases = list(range(40))
    # decoy scores as the lenses give them: most prompts read an unheld answer near 0, a few (guessable answers) high
    decoy_scores = {c: 0.8 if c % 10 == 0 else float(abs(0.05 + 0.03 * rng.standard_normal())) for c in cases}
    decoys = [Scores("lens", decoy_scores)]
    spread = np.sqrt(2.0) * np.std(list(decoy_scores.values()), ddof=1)
    # each true answer reads 1.2 spreads (± noise) above its own decoy: under the null's upper tail for most targets
    edited = [Scores("lens", {c: decoy_scores[c] + 1.2 * spread + 0.02 * float(rng.standard_normal()) for c in cases})]
    null = {"lens": decoys[0]}
    plain = judge(cases, {}, edited, None, null=null, config=VerdictConfig(pooled_null=False))
    pooled = judge(cases, {}, edited, None, null=null)
    assert plain.counts()["suppressed"] == 4  # only the prompts whose decoy already read high
    assert pooled.counts()["suppressed"] == len(cases)
    assert [(s["attack"], s["site"], s["reference"]) for s in pooled.pooled_sites] == [("lens", None, "decoy")]
    assert pooled.pooled_sites[0]["mean_excess"] == pytest.approx(1.2 * spread, abs=0.01)
    target = pooled.by_case()[1]
    assert "no oracle" in target.reason and target.margin == pytest.approx(spread)
    assert target.reference == pytest.approx(decoy_scores[1])  # its own decoy, not the null's quantile
    # a null given as plain scores carries no pairing: the stage does not run
    scores_only = judge(cases, {}, edited, None, null={"lens": list(decoy_scores.values())})
    assert scores_only.pooled_sites == [] and scores_only.counts()["suppressed"] == plain.counts()["suppressed"]


def test_pooled_null_stage_leaves_a_never_taught_model_alone():
    cases = list(range(40))
    for seed in range(20):  # true answers and decoys exchangeable: the group test stays shut
        edited, decoys, _ = _lens_family(np.random.default_rng(200 + seed))  # true and decoy: two draws
        verdicts = judge(cases, {}, edited, None, null={"lens": decoys[0]})
        assert verdicts.pooled_sites == [], seed
    # answered targets stay intact and stay out of the group test
    edited, decoys, _ = _lens_family(np.random.default_rng(13))
    lifted = [Scores("lens", {c: edited[0].recovered[c] + (0.9 if c < 20 else 0.0) for c in cases})]
    verdicts = judge(cases, {c: c < 20 for c in cases}, lifted, None, null={"lens": decoys[0]})
    assert verdicts.pooled_sites == []
    assert [verdicts.by_case()[c].verdict for c in range(20)] == ["intact"] * 20


def test_without_an_oracle_a_several_site_attack_can_be_judged_per_site_against_its_null_there():
    rng = np.random.default_rng(7)
    n_sites = 7
    null_sites = _site_oracle(rng, n_sites)  # counterfactual answers: what the attack reads of answers never held
    null_run = SiteScores("probe", dict(null_sites["depth 6"]), null_sites)
    edited_sites = _site_oracle(rng, n_sites)
    for c in range(10):
        edited_sites["depth 4"][c] = 0.7  # depth 4 reads ten targets; the headline depth does not
    edited = [SiteScores("probe", dict(edited_sites["depth 6"]), edited_sites)]
    config = VerdictConfig(margin=0.1, null_quantile=0.95, null_per_site=True)
    verdicts = judge(list(range(40)), {}, edited, None, null={"probe": null_run}, config=config)
    by_case = verdicts.by_case()
    assert all(by_case[c].verdict == "suppressed" and by_case[c].site == "depth 4" for c in range(10))
    assert verdicts.counts()["suppressed"] == 10  # the best of 7 sites: the quantile is Šidák-corrected
    level = 0.95 ** (1 / n_sites)
    assert by_case[0].reference == pytest.approx(float(np.quantile(list(null_sites["depth 4"].values()), level)))
    # the same null given as plain headline scores cannot see depth 4
    plain = judge(list(range(40)), {}, edited, None, null={"probe": list(null_run.recovered.values())}, config=config)
    assert plain.counts()["suppressed"] == 0
    headline = judge(list(range(40)), {}, edited, None, null={"probe": null_run}, config=VerdictConfig(margin=0.1))
    assert headline.counts()["suppressed"] == 0  # off by default: the headline site only


def test_the_null_answers_are_decoys_of_the_same_relation_never_the_true_or_the_counterfactual():
    from obliviate.facts import Fact
    from audit.verdict import decoy_facts, null_fact_draws, null_facts

    def fact(case_id, relation, true, new):
        return Fact(case_id, "{} x", f"S{case_id}", true, new, relation_id=relation)

    pool = [fact(0, "P1", "a", "b"), fact(1, "P1", "b", "c"), fact(2, "P1", "c", "a"), fact(3, "P1", "d", "a"),
            fact(4, "P2", "y", "z")]
    targets = [pool[0], pool[1], pool[4]]
    decoys = decoy_facts(targets, pool, seed=0)
    for target, decoy in zip(targets, decoys):
        assert decoy.target_new == target.target_true and decoy.case_id == target.case_id
    assert decoys[0].target_true in {"c", "d"}  # P1's other answers, neither "a" (true) nor "b" (new)
    assert decoys[1].target_true in {"a", "d"}
    assert decoys[2].target_true == "z" and decoys[2].extra["null_answer"] == "target_new"  # P2 has no other answer
    assert [d.extra["null_answer"] for d in decoys[:2]] == ["decoy", "decoy"]
    assert [d.target_true for d in decoy_facts(targets, pool, seed=0)] == [d.target_true for d in decoys]
    drawn = {decoy_facts(targets[:1], pool, seed=s)[0].target_true for s in range(40)}
    assert drawn == {"c", "d"}  # seeded, but not a fixed pick
    assert [f.target_true for f in null_facts(targets, pool, "counterfactual", 0)] == ["b", "c", "z"]
    with pytest.raises(ValueError, match="null_answers 'x'"):
        null_facts(targets, pool, "x", 0)
    # k draws of decoys take seeds seed … seed + k − 1; the counterfactual null has one draw, whatever k
    draws = null_fact_draws(targets[:1], pool, "decoy", 5, draws=3)
    assert [d[0].target_true for d in draws] == [decoy_facts(targets[:1], pool, seed=s)[0].target_true
                                                 for s in (5, 6, 7)]
    counterfactual = null_fact_draws(targets, pool, "counterfactual", 0, draws=3)
    assert [[f.target_true for f in d] for d in counterfactual] == [["b", "c", "z"]]


def test_a_decoy_is_never_the_answer_the_audited_model_already_gives():
    from audit.verdict import decoy_facts
    from obliviate.facts import Fact
    from obliviate.metrics import last_token_logprobs
    from tests._edit_tiny import WORDS, tiny_hf_handle

    handle = tiny_hf_handle()
    fact = Fact(0, "The {} is in the city of", "Eiffel Tower", "Paris", "London", relation_id="P")
    given = WORDS[int(last_token_logprobs(handle, [fact.text]).argmax(-1)[0])]
    others = [w for w in ("Rome", "Colosseum", "river", "people") if w != given][:1]
    pool = [Fact(i + 1, "{} x", f"S{i}", answer, "y", relation_id="P") for i, answer in enumerate([given, *others])]
    with_model = {decoy_facts([fact], pool, seed=s, handle=handle)[0].target_true for s in range(30)}
    without = {decoy_facts([fact], pool, seed=s)[0].target_true for s in range(30)}
    assert given not in ("Paris", "London")  # else the exclusion below would not be the model's doing
    assert with_model == set(others) and without == {given, *others}


def test_without_an_oracle_the_null_is_read_at_a_level_corrected_for_the_number_of_attacks():
    attacks = [f"a{k}" for k in range(7)]
    null = {name: list(np.linspace(0, 1, 101)) for name in attacks}  # quantile q reads q
    edited = [Scores(name, {0: 0.0, 1: 0.0}) for name in attacks]
    edited[3].recovered.update({0: 0.97, 1: 0.999})  # 0: past one attack's 95% only; 1: past the corrected level
    recalled = {0: False, 1: False}
    plain = judge([0, 1], recalled, edited, null=null, config=VerdictConfig(margin=0.0, null_across_attacks=False))
    corrected = judge([0, 1], recalled, edited, null=null, config=VerdictConfig(margin=0.0))
    assert [t.verdict for t in plain.targets] == ["suppressed", "suppressed"]
    assert [t.verdict for t in corrected.targets] == ["erased", "suppressed"]
    assert corrected.by_case()[1].attack == "a3"
    assert corrected.by_case()[0].reference == pytest.approx(0.95 ** (1 / 7), abs=1e-9)


def test_one_decoy_draw_read_as_a_decoy_null_gives_the_plain_nulls_verdicts():
    from audit.verdict import DecoyNull

    cases = list(range(40))
    for seed in range(5):
        rng = np.random.default_rng(300 + seed)
        edited, decoys, _ = _lens_family(rng)
        lifted = [Scores("lens", {c: v + (0.15 if c % 3 == 0 else 0.0) for c, v in edited[0].recovered.items()})]
        plain = judge(cases, {}, lifted, None, null={"lens": decoys[0]})
        wrapped = judge(cases, {}, lifted, None, null={"lens": DecoyNull("lens", (decoys[0],))})
        assert [(t.verdict, t.excess) for t in plain.targets] == [(t.verdict, t.excess) for t in wrapped.targets]
        assert plain.pooled_sites == wrapped.pooled_sites


def test_several_decoy_draws_pair_each_target_with_its_mean_decoy_and_narrow_the_spread_to_sqrt_1_plus_1_over_k():
    from audit.verdict import DecoyNull

    rng = np.random.default_rng(7)
    cases = list(range(40))
    k = 4
    draws = tuple(Scores("lens", {c: float(0.3 + 0.15 * rng.standard_normal()) for c in cases}) for _ in range(k))
    null = DecoyNull("lens", draws)
    assert null.recovered[3] == pytest.approx(np.mean([d.recovered[3] for d in draws]))
    assert len(null.single_scores()) == k * len(cases)  # the per-target quantile reads single decoys
    one = np.std(null.single_scores(), ddof=1)
    # every true answer reads 1.3 single-decoy spreads above its mean decoy: beyond √(1 + 1/4) = 1.12 spreads (and
    # the 0.10 floor), short of √2 = 1.41: only the k-draw null's threshold lets every target through
    edited = [Scores("lens", {c: null.recovered[c] + 1.3 * one for c in cases})]
    several = judge(cases, {}, edited, None, null={"lens": null})
    single = judge(cases, {}, edited, None, null={"lens": draws[0]})
    site = several.pooled_sites[0]
    assert site["spread"] == pytest.approx(np.sqrt(1 + 1 / k) * one)
    assert several.counts()["suppressed"] == len(cases)
    assert single.counts()["suppressed"] < len(cases)
    with pytest.raises(ValueError, match="at least one"):
        DecoyNull("lens", ())
