"""The machine observer (MIS) against planted structure: units whose extremes cluster in the
embedding score near 1 and units whose extremes are arbitrary score near 0.5."""
import numpy as np
import pytest

from stimuli.datasets import ImageSet
from stimuli.exemplars import select_exemplars
from stimuli.measures.mis import (
    EmbeddingCache,
    Embeddings,
    embed_images,
    machine_score_details,
    machine_scores,
    mis_from_deltas,
    pair_delta,
    unit_deltas,
)


def clustered_embeddings(rng, n=400, dim=32, noise=0.1):
    """Two tight, orthogonal clusters (images 0-199 and 200-399) and nothing else."""
    centres = np.eye(dim)[:2]
    labels = np.repeat([0, 1], n // 2)
    return centres[labels] + noise * rng.standard_normal((n, dim)), labels


def unit(refs_max, refs_min, q_max, q_min):
    return {"references_max": refs_max, "references_min": refs_min, "queries_max": q_max, "queries_min": q_min}


def test_a_unit_whose_extremes_cluster_scores_near_one_and_an_arbitrary_unit_near_half():
    rng = np.random.default_rng(0)
    emb, _ = clustered_embeddings(rng)
    clean = unit(np.arange(0, 9), np.arange(200, 209), np.arange(20, 40), np.arange(220, 240))
    arbitrary_idx = rng.permutation(400)
    arbitrary = unit(arbitrary_idx[:9], arbitrary_idx[9:18], arbitrary_idx[18:38], arbitrary_idx[38:58])
    deltas = unit_deltas(emb, clean)
    assert deltas.shape == (20,) and np.all(deltas > 1.2)  # 2 for noiseless orthogonal clusters
    high, chance = machine_scores(emb, [clean, arbitrary], alpha=10.0)
    assert high > 0.99
    assert abs(chance - 0.5) < 0.15
    # With α = 1 the order is the same, compressed towards 0.5.
    s1 = machine_scores(emb, [clean, arbitrary], alpha=1.0)
    assert 0.75 < s1[0] < 0.9 and s1[0] > s1[1]
    # Swapping the roles of the reference sets mirrors the score.
    flipped = unit(clean["references_min"], clean["references_max"], clean["queries_max"], clean["queries_min"])
    assert machine_scores(emb, [flipped], alpha=10.0)[0] < 0.01


def test_mis_over_many_random_units_averages_one_half():
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((300, 16))
    units = []
    for _ in range(200):
        idx = rng.permutation(300)[:58]
        units.append(unit(idx[:9], idx[9:18], idx[18:38], idx[38:58]))
    scores = machine_scores(emb, units, alpha=5.0)
    assert abs(scores.mean() - 0.5) < 0.02


def test_delta_matches_its_definition():
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((30, 5))
    refs_max, refs_min, qp, qm = [0, 1, 2], [3, 4], 10, 11

    def s(q, refs):
        a = emb[q] / np.linalg.norm(emb[q])
        return np.mean([a @ (emb[r] / np.linalg.norm(emb[r])) for r in refs])

    expected = (s(qp, refs_max) - s(qp, refs_min)) - (s(qm, refs_max) - s(qm, refs_min))
    assert pair_delta(emb, refs_max, refs_min, qp, qm)[0] == pytest.approx(expected)
    assert mis_from_deltas([0.0, 0.0]) == 0.5 and np.isnan(mis_from_deltas([]))


def test_embeddings_may_be_an_array_a_mapping_or_indexed_rows_and_units_exemplars():
    rng = np.random.default_rng(3)
    emb, labels = clustered_embeddings(rng, n=200)
    # A unit that responds to cluster membership (plus noise): its exemplars come from the real selector.
    responses = labels + 0.2 * rng.standard_normal(200)
    ex = select_exemplars(responses, n_references=9, percentile=20, n_queries=10, rng=0)
    as_array = machine_scores(emb, [ex])
    as_mapping = machine_scores({i: emb[i] for i in ex.all_indices()}, [ex])
    subset = np.sort(ex.all_indices())
    as_rows = machine_scores(Embeddings(subset, emb[subset]), [ex])
    assert as_array == pytest.approx(as_mapping) and as_array == pytest.approx(as_rows)
    assert as_array[0] > 0.75
    details = machine_score_details(emb, [ex])[0]
    assert details.n_tasks == 10 and details.mean_delta > 1
    assert set(details.to_dict()) == {"mis", "n_tasks", "mean_delta", "deltas"}
    np.testing.assert_allclose(details.deltas, unit_deltas(emb, ex))
    assert details.mean_delta == pytest.approx(details.deltas.mean())
    with pytest.raises(KeyError):
        machine_scores(Embeddings(subset[:5], emb[subset[:5]]), [ex])


class TinyImages(ImageSet):
    """An image set of solid grey squares, counting how often images are loaded."""

    name, source, labels, class_names = "tiny", "test", None, None

    def __init__(self, n=12):
        self.n = n
        self.loads = 0

    def __len__(self):
        return self.n

    def load(self, i):
        from PIL import Image

        self.loads += 1
        return Image.new("L", (8, 8), color=int(i * 20))


def test_embed_images_runs_each_image_once_and_caches_to_a_file(tmp_path):
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(1, 4, 3, padding=1))
    model.add_module("act", nn.ReLU())

    def preprocess(image):
        return torch.tensor(np.asarray(image, dtype=np.float32)[None] / 255.0)

    images = TinyImages()
    path = tmp_path / "emb.npz"
    cache = EmbeddingCache("key-a", path)
    first = embed_images(images, model, preprocess, "conv", indices=[3, 1, 5], cache=cache)
    assert list(first.indices) == [1, 3, 5] and first.vectors.shape == (3, 4) and images.loads == 3
    again = embed_images(images, model, preprocess, "conv", indices=[1, 5, 7], cache=cache)
    assert images.loads == 4  # only image 7 was new
    assert np.allclose(again.rows([1, 5]), first.rows([1, 5]))
    cache.save()
    reopened = EmbeddingCache("key-a", path)
    assert sorted(reopened.vectors) == [1, 3, 5, 7]
    embed_images(images, model, preprocess, "conv", indices=[1, 3, 5, 7], cache=reopened)
    assert images.loads == 4
    assert EmbeddingCache("another-embedding", path).vectors == {}
    # Without a cache: every requested image, rows in index order, equal to the cached vectors.
    plain = embed_images(images, model, preprocess, "conv", indices=[7, 3])
    assert list(plain.indices) == [3, 7]
    assert np.allclose(plain.rows([3, 7]), reopened.get([3, 7]).vectors, atol=1e-6)


def test_centring_removes_a_common_component():
    rng = np.random.default_rng(6)
    emb, _ = clustered_embeddings(rng, n=200, dim=8)
    u = unit(np.arange(0, 9), np.arange(100, 109), np.arange(20, 30), np.arange(120, 130))
    offset = emb + 25.0  # a large shared component: every cosine near 1, Δ near 0
    assert machine_scores(offset, [u])[0] < 0.55
    centred = Embeddings.from_any(offset).centred()
    assert machine_scores(centred, [u])[0] == pytest.approx(machine_scores(Embeddings.from_any(emb).centred(), [u])[0])
    assert machine_scores(centred, [u])[0] > 0.75


def test_the_pipeline_gives_every_unit_a_machine_score(tmp_path, stimuli_cache):
    import json

    from stimuli.config import StimulusConfig
    from stimuli.pipeline import run

    out = run(StimulusConfig.of(bases=["neuron", "pca"], n_units=3, completeness=False, mis_layer="relu3"),
              tmp_path / "artifact")
    manifest = json.loads((out / "manifest.json").read_text())
    scores = [u["measures"]["mis"] for entry in manifest["layers"] for u in entry["units"]]
    assert len(scores) == 6 and all(0.0 <= s <= 1.0 for s in scores)
    # On the demo network the extremes of its top units are visually distinct digits: above chance.
    assert np.mean(scores) > 0.5

    # mis_deltas[i] is the Δ of the pair (queries_max[i], queries_min[i]): recomputed here from the
    # images behind the file names, with the embedding the pipeline uses (relu3, centred on the set)
    from stimuli.datasets import load_dataset
    from stimuli.networks import load_demo
    from stimuli.render import render

    images, net = load_dataset("digits"), load_demo()
    index = {render(images.display(i, images.default_display_size))[0]: i for i in range(len(images))}
    emb = embed_images(images, net.model, net.preprocess, "relu3").centred()
    for entry in manifest["layers"]:
        for u in entry["units"]:
            m = u["measures"]
            ids = {role: [index[f] for f in u[role]] for role in ("references_max", "references_min",
                                                                    "queries_max", "queries_min")}
            want = pair_delta(emb, ids["references_max"], ids["references_min"], ids["queries_max"],
                              ids["queries_min"])
            assert len(m["mis_deltas"]) == len(u["queries_max"]) == len(u["queries_min"]) == 20
            np.testing.assert_allclose(m["mis_deltas"], want, atol=2e-6)
            assert m["mis_mean_delta"] == pytest.approx(np.mean(m["mis_deltas"]), abs=2e-6)
            assert m["mis"] == pytest.approx(mis_from_deltas(m["mis_deltas"], 1.0), abs=2e-6)
