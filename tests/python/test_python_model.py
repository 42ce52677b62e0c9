"""tinyseek.Model from Python: MTP settings reach the C++ model built from a config (depth, loss
weight and its switch), the MTP logits have the documented shapes, the MTP loss trains the shared
embedding and head, the parameters are the C++ tensors, and bad input is a clear error."""
import pytest
import torch

import tinyseek

CONFIG = {"seed": 3, "data": {"seq_len": 32},
          "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "ffn_hidden": 64,
                    "mtp": {"depth": 2, "loss_weight": 0.3, "switch_step": 10, "switch_loss_weight": 0.1}}}


def test_mtp_from_python_config():
    m = tinyseek.Model.from_config(CONFIG)
    assert m.mtp_depth == 2 and m.config["model"]["mtp"]["depth"] == 2
    assert m.mtp_loss_weight(0) == pytest.approx(0.3) and m.mtp_loss_weight(10) == pytest.approx(0.1)
    assert "mtp.1.eh_proj.weight" in dict(m.named_parameters())
    x = torch.randint(0, 256, (3, 16))
    outs = m.forward_mtp(x)
    assert [tuple(o.shape) for o in outs] == [(3, 16, 256), (3, 15, 256), (3, 14, 256)]
    torch.testing.assert_close(outs[0], m(x))
    # The depth-2 loss alone reaches the shared embedding and head.
    m.train()
    torch.nn.functional.cross_entropy(outs[2].flatten(0, 1), torch.randint(0, 256, (3 * 14,))).backward()
    params = dict(m.named_parameters())
    assert params["embed.weight"].grad.abs().sum() > 0 and params["head.weight"].grad.abs().sum() > 0
    assert params["mtp.1.eh_proj.weight"].grad.abs().sum() > 0
    # Overrides by dotted key; depth 0 has no MTP modules.
    plain = tinyseek.Model.from_config(CONFIG, **{"model.mtp.depth": 0})
    assert plain.mtp_depth == 0 and not any(k.startswith("mtp.") for k, _ in plain.named_parameters())


def test_parameters_are_the_cpp_tensors_and_errors_are_clear():
    m = tinyseek.Model.from_config(CONFIG)
    x = torch.randint(0, 256, (1, 8))
    with torch.no_grad():
        before = m(x)
        m.head.weight.zero_()  # the Python parameter is the C++ model's tensor
        assert m(x).abs().max().item() == 0.0
        assert not torch.equal(before, m(x))
    with pytest.raises(RuntimeError, match=r"token ids must be in \[0, 256\)"):
        m(torch.tensor([[256]]))
    with pytest.raises(RuntimeError, match="1..32"):
        m(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(RuntimeError, match="int64"):
        m(torch.zeros(1, 4))
    with pytest.raises(RuntimeError, match="model.n_heads"):
        tinyseek.Model.from_config(CONFIG, **{"model.n_heads": 3})
    with pytest.raises(RuntimeError, match="no such run folder"):
        tinyseek.load("/nonexistent/run")
