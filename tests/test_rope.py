"""RoPE tables against transformers' own rotary embeddings (the reference nobody here wrote)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: E402
from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding  # noqa: E402

from ingot.arch.rope import inv_freq_and_factor, rope_tables  # noqa: E402
from ingot.arch.spec import RopeSpec  # noqa: E402

# transformers takes cos/sin of float32 angles with float32 kernels; our tables round the angle to
# float32 at the same step but evaluate cos/sin in float64, so a few float32 ulps (~1e-7) separate
# them. 1e-5 leaves room for a one-ulp difference in an inverse frequency, which moves a float32
# angle by up to ~pos * 1e-7 at the positions used here (< 100), and is far below any real error
# (a wrong frequency or factor moves values by >1e-3).
ATOL = 1e-5
HEADS, HIDDEN = 4, 64


def _spec(params, mpe, rot_dim=0):
    sc = None if params["rope_type"] == "default" else {k: v for k, v in params.items() if k != "rope_theta"}
    return RopeSpec(theta=params["rope_theta"], rot_dim=rot_dim, scaling=sc, max_position_embeddings=mpe)


def _reference(emb, n, token_by_token=False):
    """transformers' cos/sin [n, head_dim] for positions 0..n-1."""
    x = torch.zeros(1, dtype=torch.float32)
    with torch.no_grad():
        if token_by_token:  # decoding: one position per call, sequence grows by one each step
            parts = [emb(x, torch.tensor([[p]])) for p in range(n)]
            return torch.cat([c[0] for c, _ in parts]).numpy(), torch.cat([s[0] for _, s in parts]).numpy()
        c, s = emb(x, torch.arange(n)[None])
        return c[0].numpy(), s[0].numpy()


def _compare(spec, head_dim, emb, n, token_by_token=False):
    cos, sin = rope_tables(spec, head_dim, n)
    half = (spec.rot_dim or head_dim) // 2
    assert cos.dtype == np.float32 and sin.dtype == np.float32
    assert cos.shape == sin.shape == (n, half)
    rc, rs = _reference(emb, n, token_by_token)
    assert rc.shape[-1] == 2 * half  # transformers repeats the half twice
    np.testing.assert_allclose(cos, rc[:, :half], rtol=0, atol=ATOL)
    np.testing.assert_allclose(sin, rs[:, :half], rtol=0, atol=ATOL)


def _llama(params, mpe, head_dim=16):
    cfg = transformers.LlamaConfig(hidden_size=HIDDEN, num_attention_heads=HEADS, head_dim=head_dim,
                                   max_position_embeddings=mpe, rope_parameters=dict(params))
    return LlamaRotaryEmbedding(cfg)


def _phi3(params, mpe, orig, partial=1.0):
    cfg = transformers.Phi3Config(hidden_size=HIDDEN, num_attention_heads=HEADS, max_position_embeddings=mpe,
                                  original_max_position_embeddings=orig, partial_rotary_factor=partial,
                                  rope_parameters=dict(params))
    return Phi3RotaryEmbedding(cfg)


LLAMA_CASES = {
    "default": ({"rope_type": "default", "rope_theta": 10000.0}, 64, 16),
    "default_theta1e6_hd12": ({"rope_type": "default", "rope_theta": 1e6}, 64, 12),
    "linear": ({"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.5}, 64, 16),
    "yarn": ({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
              "original_max_position_embeddings": 16}, 64, 16),
    "yarn_mscale": ({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "mscale": 0.707,
                     "mscale_all_dim": 1.0, "original_max_position_embeddings": 16}, 64, 16),
    "yarn_attention_factor_untruncated": ({"rope_type": "yarn", "rope_theta": 50000.0, "factor": 8.0,
                                           "attention_factor": 1.25, "beta_fast": 16, "beta_slow": 2,
                                           "truncate": False, "original_max_position_embeddings": 8}, 64, 16),
    "llama3": ({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}, 256, 32),
}


@pytest.mark.parametrize("name", sorted(LLAMA_CASES))
def test_matches_llama_rotary(name):
    params, mpe, head_dim = LLAMA_CASES[name]
    _compare(_spec(params, mpe), head_dim, _llama(params, mpe, head_dim), n=96)


def test_yarn_factor_derived_from_context_stretch():
    # DeepSeek-V3 style: no `factor`, transformers uses max_position_embeddings / original
    params = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": None, "original_max_position_embeddings": 16}
    spec = _spec(params, 64)
    emb = _llama(params, 64)
    assert inv_freq_and_factor(spec, 16)[1] == pytest.approx(emb.attention_scaling)
    assert inv_freq_and_factor(spec, 16)[1] > 1.0
    spec.scaling.pop("factor")  # absent key behaves like None
    _compare(spec, 16, emb, n=80)


def test_dynamic_ntk_token_by_token():
    params = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    # 16 original positions, 48 rows: rows 16.. use grown bases, as when decoding one token at a time
    spec = _spec(params, 16)
    _compare(spec, 16, _llama(params, 16), n=48, token_by_token=True)
    # within the original range the table is plain RoPE, beyond it it is not
    plain, _ = rope_tables(RopeSpec(theta=10000.0, max_position_embeddings=16), 16, 48)
    cos, _ = rope_tables(spec, 16, 48)
    np.testing.assert_array_equal(cos[:16], plain[:16])
    assert np.abs(cos[16:] - plain[16:]).max() > 1e-3


@pytest.mark.parametrize("n", [12, 40])  # below and above original_max_position_embeddings = 16
@pytest.mark.parametrize("extra", [{}, {"attention_factor": 1.1}, {"factor": 3.0}])
def test_longrope_phi3(n, extra):
    params = {"rope_type": "longrope", "rope_theta": 10000.0,
              "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.1, 3.8],
              "long_factor": [1.0, 1.5, 2.5, 4.0, 6.0, 9.0, 13.0, 18.0], **extra}
    spec = _spec(params, 64)
    spec.scaling["original_max_position_embeddings"] = 16  # the arch file moves Phi-3's top-level field here
    _compare(spec, 16, _phi3(params, 64, 16), n=n)


def test_partial_rotary_default_phi3():
    params = {"rope_type": "default", "rope_theta": 10000.0}
    _compare(_spec(params, 64, rot_dim=8), 16, _phi3(params, 64, 64, partial=0.5), n=64)


def test_partial_rotary_longrope_phi3():
    params = {"rope_type": "longrope", "rope_theta": 10000.0,
              "short_factor": [1.0, 1.2, 1.7, 2.4], "long_factor": [1.0, 3.0, 7.0, 15.0]}
    spec = _spec(params, 64, rot_dim=8)
    spec.scaling["original_max_position_embeddings"] = 16
    _compare(spec, 16, _phi3(params, 64, 16, partial=0.5), n=40)


@pytest.mark.parametrize("kind", ["yarn", "dynamic"])
def test_partial_rotary_scaled_llama(kind):
    params = {"rope_type": kind, "rope_theta": 10000.0, "factor": 4.0, "partial_rotary_factor": 0.5}
    if kind == "yarn":
        params["original_max_position_embeddings"] = 16
    spec = _spec(params, 16 if kind == "dynamic" else 64, rot_dim=8)
    emb = _llama(params, spec.max_position_embeddings)
    _compare(spec, 16, emb, n=40, token_by_token=kind == "dynamic")


def test_scaling_changes_the_table():
    # guards against a comparison that would pass for any variant
    base = rope_tables(RopeSpec(), 16, 32)[0]
    lin = rope_tables(RopeSpec(scaling={"rope_type": "linear", "factor": 2.0}), 16, 32)[0]
    assert np.abs(base - lin).max() > 1e-2


def test_unknown_rope_type():
    with pytest.raises(ValueError, match="unsupported rope scaling type 'mrope-ish'"):
        rope_tables(RopeSpec(scaling={"rope_type": "mrope-ish"}), 16, 8)
    with pytest.raises(ValueError, match="unsupported rope scaling type"):
        inv_freq_and_factor(RopeSpec(scaling={"type": "nope"}), 16)
