"""Bootstrap intervals for eval scores: their width, their edges, and paired differences."""

from webdancer.stats import bootstrap_ci, paired_difference


def test_a_constant_score_has_no_spread_and_no_scores_give_an_empty_interval():
    assert bootstrap_ci([0.5] * 24) == (0.5, 0.5)
    assert bootstrap_ci([]) == (0.0, 0.0)


def test_the_interval_of_400_coin_flips_is_about_the_normal_one():
    flips = [float(i % 2) for i in range(400)]
    low, high = bootstrap_ci(flips)
    # The normal approximation: 0.5 +- 1.96 * sqrt(0.25 / 400) = 0.5 +- 0.049.
    assert 0.44 < low < 0.46 and 0.54 < high < 0.56
    assert bootstrap_ci(flips) == (low, high)  # seeded: the same results give the same interval


def test_paired_difference_tells_runs_apart_only_when_the_interval_leaves_zero():
    a = {f"q{i}": 0.0 for i in range(20)}
    same = paired_difference(a, dict(a))
    assert (same.questions, same.mean, same.low, same.high, same.distinguishable) == (20, 0.0, 0.0, 0.0, False)
    better = paired_difference(a, {q: 1.0 if i < 15 else 0.0 for i, q in enumerate(a)})
    assert better.mean == 0.75 and better.low > 0.5 and better.distinguishable
    one_more = paired_difference(a, {q: float(i == 0) for i, q in enumerate(a)})  # one question of 20
    assert one_more.mean == 0.05 and one_more.low == 0.0 and not one_more.distinguishable
    # Only questions in both runs are paired.
    partial = paired_difference({"q1": 0.0, "q2": 1.0}, {"q2": 0.0, "q3": 1.0})
    assert (partial.questions, partial.mean) == (1, -1.0)
