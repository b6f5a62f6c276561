"""models.zoo: checkpoints as state dicts without building models, and the exact training data."""

import torch

from lenscape.models.checkpoints import state_fingerprint
from lenscape.models.zoo import iter_states, load_model, load_state, training_data


def test_states_match_the_checkpoints_and_training_data_has_the_noise_mask(trained_run):
    (rec,) = trained_run("digits-mlp", epochs=3, label_noise=0.2, train_subset=600)
    run_id = rec["run_id"]
    states = list(iter_states(run_id))
    assert [e for e, _ in states] == [0, 1, 2, 3]
    lm = load_model(run_id, 2)
    assert all(torch.equal(v, lm.model.state_dict()[k]) for k, v in load_state(run_id, 2).items())
    assert all(torch.equal(v, states[2][1][k]) for k, v in load_state(run_id, 2).items())
    assert not torch.equal(states[0][1]["fc1.weight"], states[3][1]["fc1.weight"])
    assert set(load_state(run_id)) == set(states[-1][1])  # default: the last epoch
    # the file's weights are what the record fingerprinted (model_fingerprint adds the normalization buffers)
    assert state_fingerprint(states[1][1]) != state_fingerprint(states[2][1])

    data = training_data(load_model(run_id))
    assert len(data.train) == 600
    flipped = torch.nonzero(data.noise_mask).flatten().tolist()
    assert flipped == rec["noise"]["indices"] and len(flipped) == 120
    assert data.train.labels[flipped].tolist() == rec["noise"]["noisy_labels"]
    assert data.original_labels[flipped].tolist() == rec["noise"]["original_labels"]
    assert (data.train.labels[flipped] != data.original_labels[flipped]).all()
    clean = ~data.noise_mask
    assert torch.equal(data.train.labels[clean], data.original_labels[clean])


def test_list_runs_reads_a_record_again_only_when_it_changed(trained_run, monkeypatch):
    import json

    import lenscape.models.zoo as zoo
    from lenscape.models.paths import runs_dir

    (rec,) = trained_run("digits-mlp", epochs=1)
    reads = []
    real = zoo.read_json
    monkeypatch.setattr(zoo, "read_json", lambda p: reads.append(p) or real(p))
    zoo.list_runs()
    n = len(reads)
    for _ in range(8):
        assert [r["run_id"] for r in zoo.list_runs()] == [rec["run_id"]]
    assert len(reads) == n  # eight reruns, no more reads
    path = runs_dir() / rec["run_id"] / "run.json"
    data = json.loads(path.read_text())
    data["name"] = "renamed on disk, longer than before"
    path.write_text(json.dumps(data))
    assert zoo.list_runs()[0]["name"] == "renamed on disk, longer than before"
    path.write_text("{ half a file")
    assert zoo.list_runs() == []  # broken: skipped, not an error
