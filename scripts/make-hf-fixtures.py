#!/usr/bin/env python3
"""Tiny random-weight Hugging Face checkpoints with reference logits, for test/hf/*.

Plain PyTorch (Debian python3-torch; no transformers needed) mirroring the forward passes of
transformers' modeling_{mixtral,qwen2_moe,qwen3_moe,olmoe,llama,qwen2,granitemoe,jetmoe,...}.py and the RoPE variants
of modeling_rope_utils.py. Writes test/fixtures/hf/<name>/{config.json, model.safetensors,
reference.safetensors}; reference holds input_ids [1, T], logits [T, V] (float32) and greedy,
the greedy continuation of the input (a fresh full forward per token, no cache).

Run: /usr/bin/python3 scripts/make-hf-fixtures.py [NAME...]   (deterministic: fixed seeds; names: only those fixtures)
"""
import json, math, os, struct, sys
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'hf')
DT = {torch.uint8: 'U8', torch.float32: 'F32', torch.bfloat16: 'BF16', torch.float16: 'F16', torch.int64: 'I64'}


def write_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    if metadata:
        header['__metadata__'] = metadata
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        if t.dtype == torch.bfloat16:
            b = t.view(torch.int16).numpy().tobytes()
        else:
            b = t.numpy().tobytes()
        header[name] = {'dtype': DT[t.dtype], 'shape': list(t.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------- RoPE (modeling_rope_utils)
def inv_freq(cfg, dim):
    base = cfg.get('rope_theta', 10000.0)
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    rs = cfg.get('rope_scaling')
    if not rs:
        return inv, 1.0
    t = rs.get('rope_type', rs.get('type'))
    factor = rs['factor']
    if t == 'linear':
        return inv / factor, 1.0
    if t == 'llama3':
        lo, hi, old = rs['low_freq_factor'], rs['high_freq_factor'], rs['original_max_position_embeddings']
        lo_w, hi_w = old / lo, old / hi
        wave = 2 * math.pi / inv
        out = torch.where(wave > lo_w, inv / factor, inv)
        smooth = (old / wave - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / factor + smooth * out
        med = ~(wave < hi_w) * ~(wave > lo_w)
        return torch.where(med, smoothed, out), 1.0
    if t == 'yarn':
        omp = rs.get('original_max_position_embeddings') or cfg['max_position_embeddings']
        def get_mscale(s, m=1):
            return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0
        attn = rs.get('attention_factor')
        if attn is None:
            m, m_all = rs.get('mscale'), rs.get('mscale_all_dim')
            attn = get_mscale(factor, m) / get_mscale(factor, m_all) if (m and m_all) else get_mscale(factor)
        bf, bs = rs.get('beta_fast', 32), rs.get('beta_slow', 1)
        def corr(rot):
            return (dim * math.log(omp / (rot * 2 * math.pi))) / (2 * math.log(base))
        low, high = corr(bf), corr(bs)
        if rs.get('truncate', True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
        extra = 1 - ramp
        pos = base ** (torch.arange(0, dim, 2).float() / dim)
        return (1.0 / (factor * pos)) * (1 - extra) + (1.0 / pos) * extra, attn
    raise ValueError(t)


FP4 = torch.tensor([+0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def mxfp4(blocks, scales):
    # transformers convert_moe_packed_tensors: low nibble first, ldexp by scale - 127, then transpose(1, 2)
    *prefix, G, B = blocks.shape
    rows = blocks.reshape(-1, B).long()
    exp = scales.reshape(-1, 1).long() - 127
    out = torch.empty(rows.shape[0], B * 2)
    out[:, 0::2] = FP4[rows & 0x0F]
    out[:, 1::2] = FP4[rows >> 4]
    out = torch.ldexp(out, exp)
    return out.reshape(*prefix, G * B * 2).transpose(1, 2).contiguous()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rms(x, w, eps):
    v = x.float().pow(2).mean(-1, keepdim=True)
    return w * (x.float() * torch.rsqrt(v + eps))


# ---------------------------------------------------------------- model
class Model:
    def __init__(self, cfg, kind, g, wdtype=torch.float32, fused=False):
        self.cfg, self.kind, self.fused, self.g = cfg, kind, fused, g
        self.raw, self.dq = {}, {}
        d, V = cfg['hidden_size'], cfg['vocab_size']
        H = cfg['num_attention_heads']
        KV = cfg.get('num_key_value_heads') or H
        hd = cfg.get('head_dim') or d // H
        self.H, self.KV, self.hd = H, KV, hd
        self.w = {}
        def p(name, *shape, scale=0.3):
            t = (torch.randn(*shape, generator=g) * scale).to(wdtype)
            self.w[name] = t
        p('model.embed_tokens.weight', V, d, scale=1.0)
        qkv_bias = kind in ('qwen2', 'qwen2_moe') or cfg.get('attention_bias', False)
        for i in range(cfg['num_hidden_layers']):
            L = f'model.layers.{i}.'
            p(L + 'input_layernorm.weight', d, scale=0.1)
            self.w[L + 'input_layernorm.weight'] = (self.w[L + 'input_layernorm.weight'].float() + 1).to(wdtype)
            p(L + 'post_attention_layernorm.weight', d, scale=0.1)
            self.w[L + 'post_attention_layernorm.weight'] = (self.w[L + 'post_attention_layernorm.weight'].float() + 1).to(wdtype)
            if kind.startswith('deepseek'):
                self.mla_weights(L, p)
            elif kind == 'jetmoe':
                # JetMoeMoA: per-expert query (input_linear) / output (output_linear) projections, bias, router; shared kv_proj
                P = L + 'self_attention.'
                E, kvd = self.E(), KV * hd
                p(P + 'experts.router.layer.weight', E, d, scale=1.0)
                p(P + 'experts.input_linear.weight', E, kvd, d)
                p(P + 'experts.output_linear.weight', E, d, kvd)
                p(P + 'experts.bias', d, scale=0.1)
                p(P + 'kv_proj.weight', 2 * kvd, d)
            else:
                p(L + 'self_attn.q_proj.weight', H * hd, d)
                p(L + 'self_attn.k_proj.weight', KV * hd, d)
                p(L + 'self_attn.v_proj.weight', KV * hd, d)
                p(L + 'self_attn.o_proj.weight', d, H * hd)
            if qkv_bias:
                for n, o in (('q', H * hd), ('k', KV * hd), ('v', KV * hd)):
                    p(L + f'self_attn.{n}_proj.bias', o, scale=0.1)
            if cfg.get('attention_bias', False):
                p(L + 'self_attn.o_proj.bias', d, scale=0.1)
            if kind == 'qwen3_moe':
                p(L + 'self_attn.q_norm.weight', hd, scale=0.1); p(L + 'self_attn.k_norm.weight', hd, scale=0.1)
                for n in ('q_norm', 'k_norm'):
                    self.w[L + f'self_attn.{n}.weight'] = (self.w[L + f'self_attn.{n}.weight'].float() + 1).to(wdtype)
            if kind == 'olmoe':
                p(L + 'self_attn.q_norm.weight', H * hd, scale=0.1); p(L + 'self_attn.k_norm.weight', KV * hd, scale=0.1)
                for n in ('q_norm', 'k_norm'):
                    self.w[L + f'self_attn.{n}.weight'] = (self.w[L + f'self_attn.{n}.weight'].float() + 1).to(wdtype)
            if kind == 'gpt_oss':
                P = L + 'mlp.'
                E, f = self.E(), cfg['intermediate_size']
                p(L + 'self_attn.sinks', H, scale=1.0)
                p(P + 'router.weight', E, d, scale=1.0); p(P + 'router.bias', E, scale=0.5)
                # MXFP4 experts: random blocks and scales, dequantised as transformers does
                gb = torch.randint(0, 256, (E, 2 * f, d // 32, 16), generator=g, dtype=torch.int64).to(torch.uint8)
                gs = torch.randint(123, 127, (E, 2 * f, d // 32), generator=g, dtype=torch.int64).to(torch.uint8)
                db = torch.randint(0, 256, (E, d, f // 32, 16), generator=g, dtype=torch.int64).to(torch.uint8)
                ds = torch.randint(123, 127, (E, d, f // 32), generator=g, dtype=torch.int64).to(torch.uint8)
                self.raw[P + 'experts.gate_up_proj_blocks'] = gb; self.raw[P + 'experts.gate_up_proj_scales'] = gs
                self.raw[P + 'experts.down_proj_blocks'] = db; self.raw[P + 'experts.down_proj_scales'] = ds
                self.dq[P + 'experts.gate_up_proj'] = mxfp4(gb, gs)
                self.dq[P + 'experts.down_proj'] = mxfp4(db, ds)
                p(P + 'experts.gate_up_proj_bias', E, 2 * f, scale=0.3)
                p(P + 'experts.down_proj_bias', E, d, scale=0.3)
            elif kind in ('granitemoe', 'jetmoe'):
                P = L + ('block_sparse_moe.' if kind == 'granitemoe' else 'mlp.')
                E, f = self.E(), cfg['intermediate_size']
                p(P + 'router.layer.weight', E, d, scale=1.0)
                p(P + 'input_linear.weight', E, 2 * f, d)
                p(P + 'output_linear.weight', E, d, f)
                if kind == 'jetmoe':
                    p(P + 'bias', d, scale=0.1)
            elif self.is_moe(i):
                P = L + ('block_sparse_moe.' if kind == 'mixtral' else 'mlp.')
                E, f = self.E(), self.f_moe()
                # gate weights: random normal (DeepSeek too)
                p(P + 'gate.weight', E, d, scale=1.0)
                gn, un, dn = ('w1', 'w3', 'w2') if kind == 'mixtral' else ('gate_proj', 'up_proj', 'down_proj')
                for e in range(E):
                    p(P + f'experts.{e}.{gn}.weight', f, d); p(P + f'experts.{e}.{un}.weight', f, d); p(P + f'experts.{e}.{dn}.weight', d, f)
                if kind == 'deepseek_v3':
                    p(P + 'gate.e_score_correction_bias', E, scale=0.1)
                if kind.startswith('deepseek'):
                    sf = f * cfg['n_shared_experts']
                    p(P + 'shared_experts.gate_proj.weight', sf, d); p(P + 'shared_experts.up_proj.weight', sf, d); p(P + 'shared_experts.down_proj.weight', d, sf)
                if kind == 'qwen2_moe':
                    sf = cfg['shared_expert_intermediate_size']
                    p(P + 'shared_expert.gate_proj.weight', sf, d); p(P + 'shared_expert.up_proj.weight', sf, d); p(P + 'shared_expert.down_proj.weight', d, sf)
                    p(P + 'shared_expert_gate.weight', 1, d, scale=1.0)
            else:
                f = cfg['intermediate_size']
                p(L + 'mlp.gate_proj.weight', f, d); p(L + 'mlp.up_proj.weight', f, d); p(L + 'mlp.down_proj.weight', d, f)
        p('model.norm.weight', d, scale=0.1)
        self.w['model.norm.weight'] = (self.w['model.norm.weight'].float() + 1).to(wdtype)
        if not cfg.get('tie_word_embeddings', False):
            p('lm_head.weight', V, d)

    def mla_weights(self, L, p):
        c, d, H = self.cfg, self.cfg['hidden_size'], self.H
        qk = c['qk_nope_head_dim'] + c['qk_rope_head_dim']
        r = c['kv_lora_rank']
        if c.get('q_lora_rank'):
            p(L + 'self_attn.q_a_proj.weight', c['q_lora_rank'], d)
            self.w[L + 'self_attn.q_a_layernorm.weight'] = 1 + 0.1 * torch.randn(c['q_lora_rank'], generator=self.g)
            p(L + 'self_attn.q_b_proj.weight', H * qk, c['q_lora_rank'])
        else:
            p(L + 'self_attn.q_proj.weight', H * qk, d)
        p(L + 'self_attn.kv_a_proj_with_mqa.weight', r + c['qk_rope_head_dim'], d)
        self.w[L + 'self_attn.kv_a_layernorm.weight'] = 1 + 0.1 * torch.randn(r, generator=self.g)
        p(L + 'self_attn.kv_b_proj.weight', H * (c['qk_nope_head_dim'] + c['v_head_dim']), r)
        p(L + 'self_attn.o_proj.weight', d, H * c['v_head_dim'])

    def mla(self, x, L, cos, sin):
        c, H, T = self.cfg, self.H, x.shape[0]
        nope, R, vd, r = c['qk_nope_head_dim'], c['qk_rope_head_dim'], c['v_head_dim'], c['kv_lora_rank']
        qk, eps = nope + R, c['rms_norm_eps']
        if c.get('q_lora_rank'):
            q = F.linear(rms(F.linear(x, self.W(L + 'self_attn.q_a_proj.weight')), self.W(L + 'self_attn.q_a_layernorm.weight'), eps), self.W(L + 'self_attn.q_b_proj.weight'))
        else:
            q = F.linear(x, self.W(L + 'self_attn.q_proj.weight'))
        q = q.view(T, H, qk).transpose(0, 1)
        q_pass, q_rot = torch.split(q, [nope, R], dim=-1)
        ckv = F.linear(x, self.W(L + 'self_attn.kv_a_proj_with_mqa.weight'))
        k_pass, k_rot = torch.split(ckv, [r, R], dim=-1)
        k_pass = F.linear(rms(k_pass, self.W(L + 'self_attn.kv_a_layernorm.weight'), eps), self.W(L + 'self_attn.kv_b_proj.weight')).view(T, H, nope + vd).transpose(0, 1)
        k_pass, v = torch.split(k_pass, [nope, vd], dim=-1)
        k_rot = k_rot.view(1, T, R)
        # apply_rotary_pos_emb_interleave: de-interleave the pairs, then the half-split rotation
        q_rot = q_rot.reshape(H, T, R // 2, 2).transpose(-1, -2).reshape(H, T, R)
        k_rot = k_rot.reshape(1, T, R // 2, 2).transpose(-1, -2).reshape(1, T, R)
        q_rot = q_rot * cos + rotate_half(q_rot) * sin
        k_rot = k_rot * cos + rotate_half(k_rot) * sin
        k_rot = k_rot.expand(H, T, R)
        query = torch.cat((q_pass, q_rot), dim=-1)
        key = torch.cat((k_pass, k_rot), dim=-1)
        scaling = qk ** -0.5
        rs = c.get('rope_scaling')
        if rs and rs.get('mscale_all_dim'):
            m = 0.1 * rs['mscale_all_dim'] * math.log(rs['factor']) + 1.0
            scaling = scaling * m * m
        s_ = (query @ key.transpose(1, 2)) * scaling + torch.triu(torch.full((T, T), float('-inf')), 1)
        o = (F.softmax(s_, dim=-1, dtype=torch.float32) @ v).transpose(0, 1).reshape(T, H * vd)
        return F.linear(o, self.W(L + 'self_attn.o_proj.weight'))

    def ds_route(self, x, P):
        c, k = self.cfg, self.kind
        E, K, G, TG = self.E(), c['num_experts_per_tok'], c.get('n_group', 1), c.get('topk_group', 1)
        logits = F.linear(x, self.W(P + 'gate.weight'))
        self.router_logits.append(logits)
        T = x.shape[0]
        if k == 'deepseek_v3':
            scores = torch.sigmoid(logits)
            sfc = scores + self.W(P + 'gate.e_score_correction_bias')
            gs = sfc.view(T, G, E // G).topk(2, dim=-1)[0].sum(dim=-1)
            gi = torch.topk(gs, k=TG, dim=-1, sorted=False)[1]
            gm = torch.zeros_like(gs).scatter_(1, gi, 1)
            sm = gm.unsqueeze(-1).expand(T, G, E // G).reshape(T, E)
            sfc = sfc.masked_fill(~sm.bool(), 0.0)
            idx = torch.topk(sfc, k=K, dim=-1, sorted=False)[1]
            w = scores.gather(1, idx)
            if c.get('norm_topk_prob', True):
                w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
            return idx, w * c['routed_scaling_factor']
        scores = F.softmax(logits, dim=-1, dtype=torch.float32)
        if c.get('topk_method') == 'group_limited_greedy':
            gs = scores.view(T, G, -1).max(dim=-1).values
            gi = torch.topk(gs, k=TG, dim=-1, sorted=False)[1]
            gm = torch.zeros_like(gs).scatter_(1, gi, 1)
            sm = gm.unsqueeze(-1).expand(T, G, E // G).reshape(T, -1)
            w, idx = torch.topk(scores.masked_fill(~sm.bool(), 0.0), k=K, dim=-1, sorted=False)
        else:
            w, idx = torch.topk(scores, k=K, dim=-1, sorted=False)
        if K > 1 and c.get('norm_topk_prob', False):
            w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
        else:
            w = w * c['routed_scaling_factor']
        return idx, w

    def E(self):
        return self.cfg.get('num_local_experts') or self.cfg.get('num_experts') or self.cfg.get('n_routed_experts')

    def f_moe(self):
        return self.cfg['intermediate_size'] if self.kind in ('mixtral', 'olmoe', 'granitemoe', 'gpt_oss', 'jetmoe') else self.cfg['moe_intermediate_size']

    def is_moe(self, i):
        k, c = self.kind, self.cfg
        if k in ('llama', 'qwen2'):
            return False
        if k.startswith('deepseek'):
            return i >= c.get('first_k_dense_replace', 0)
        if k in ('qwen2_moe', 'qwen3_moe'):
            return i not in c.get('mlp_only_layers', []) and c['num_experts'] > 0 and (i + 1) % c.get('decoder_sparse_step', 1) == 0
        return True

    def W(self, n):
        return self.w[n].float()

    def mlp(self, x, P, names=('gate_proj', 'up_proj', 'down_proj')):
        g, u, dn = names
        return F.linear(F.silu(F.linear(x, self.W(P + g + '.weight'))) * F.linear(x, self.W(P + u + '.weight')), self.W(P + dn + '.weight'))

    def granite_moe(self, x, P):
        # GraniteMoeTopKGating: softmax over the top-k logits; ParallelExperts: chunk(2) = gate, up
        K = self.cfg['num_experts_per_tok']
        logits = F.linear(x, self.W(P + 'router.layer.weight')).float()
        self.router_logits.append(logits)
        top, idx = logits.topk(K, dim=1)
        gates = F.softmax(top, dim=1, dtype=torch.float)
        out = torch.zeros_like(x)
        for e in range(self.E()):
            t, j = torch.where(idx == e)
            if t.numel() == 0:
                continue
            h = F.linear(x[t], self.W(P + 'input_linear.weight')[e])
            g, u = h.chunk(2, dim=-1)
            out.index_add_(0, t, F.linear(F.silu(g) * u, self.W(P + 'output_linear.weight')[e]) * gates[t, j, None])
        return out

    def gpt_oss_moe(self, x, P):
        c = self.cfg
        K, lim, alpha = c['num_experts_per_tok'], c['swiglu_limit'], 1.702
        logits = F.linear(x, self.W(P + 'router.weight'), self.W(P + 'router.bias'))
        self.router_logits.append(logits)
        top, idx = torch.topk(logits, K, dim=-1)
        gates = F.softmax(top, dim=1, dtype=top.dtype)
        gu_w, gu_b = self.dq[P + 'experts.gate_up_proj'], self.W(P + 'experts.gate_up_proj_bias')
        dn_w, dn_b = self.dq[P + 'experts.down_proj'], self.W(P + 'experts.down_proj_bias')
        out = torch.zeros_like(x)
        for e in range(self.E()):
            t, j = torch.where(idx == e)
            if t.numel() == 0:
                continue
            gu = x[t] @ gu_w[e] + gu_b[e]
            gate, up = gu[..., ::2], gu[..., 1::2]
            gate = gate.clamp(min=None, max=lim)
            up = up.clamp(min=-lim, max=lim)
            glu = gate * torch.sigmoid(gate * alpha)
            out.index_add_(0, t, (((up + 1) * glu) @ dn_w[e] + dn_b[e]) * gates[t, j, None])
        return out

    def jet_attn(self, x, L, cos, sin):
        # JetMoeAttention: top-k attention experts (softmax over the top-k logits), queries from each
        # chosen expert, keys/values shared, key heads tiled with .repeat over the k slots
        T, K, KV, hd = x.shape[0], self.cfg['num_experts_per_tok'], self.KV, self.hd
        P = L + 'self_attention.'
        logits = F.linear(x, self.W(P + 'experts.router.layer.weight')).float()
        self.router_logits.append(logits)
        top, idx = logits.topk(K, dim=1)
        gates = F.softmax(top, dim=1)
        q = torch.einsum('td,tjod->tjo', x, self.W(P + 'experts.input_linear.weight')[idx])
        k, v = F.linear(x, self.W(P + 'kv_proj.weight')).chunk(2, dim=-1)
        q = q.reshape(T, K * KV, hd).transpose(0, 1)
        k = k.reshape(T, KV, hd).transpose(0, 1)
        v = v.reshape(T, KV, hd).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = k.repeat(K, 1, 1), v.repeat(K, 1, 1)
        s = (q @ k.transpose(1, 2)) / math.sqrt(hd) + torch.triu(torch.full((T, T), float('-inf')), 1)
        o = (F.softmax(s, dim=-1, dtype=torch.float32) @ v).transpose(0, 1).reshape(T, K, KV * hd)
        out = torch.einsum('tjo,tjdo->tjd', o, self.W(P + 'experts.output_linear.weight')[idx]) * gates[..., None]
        return out.sum(1) + self.W(P + 'experts.bias')

    def moe(self, x, P):
        if self.kind == 'jetmoe':
            return self.granite_moe(x, P) + self.W(P + 'bias')
        if self.kind == 'gpt_oss':
            return self.gpt_oss_moe(x, P)
        if self.kind == 'granitemoe':
            return self.granite_moe(x, P)
        c, k = self.cfg, self.kind
        E, K = self.E(), c['num_experts_per_tok']
        if k.startswith('deepseek'):
            sel, rw = self.ds_route(x, P)
        else:
            logits = F.linear(x, self.W(P + 'gate.weight'))
            self.router_logits.append(logits)
            rw = F.softmax(logits, dim=1, dtype=torch.float)
            rw, sel = torch.topk(rw, K, dim=-1)
            if k == 'mixtral' or c.get('norm_topk_prob', False):
                rw = rw / rw.sum(dim=-1, keepdim=True)
        names = ('w1', 'w3', 'w2') if k == 'mixtral' else ('gate_proj', 'up_proj', 'down_proj')
        out = torch.zeros_like(x)
        for e in range(E):
            idx, pos = torch.where(sel == e)
            if idx.numel() == 0:
                continue
            out.index_add_(0, idx, self.mlp(x[idx], P + f'experts.{e}.', names) * rw[idx, pos, None])
        if k.startswith('deepseek'):
            out = out + self.mlp(x, P + 'shared_experts.')
        if k == 'qwen2_moe':
            out = out + torch.sigmoid(F.linear(x, self.W(P + 'shared_expert_gate.weight'))) * self.mlp(x, P + 'shared_expert.')
        return out

    def attn(self, x, L, cos, sin):
        T = x.shape[0]
        H, KV, hd, c = self.H, self.KV, self.hd, self.cfg
        bias = lambda n: (None if (L + f'self_attn.{n}.bias') not in self.w else self.W(L + f'self_attn.{n}.bias'))
        q = F.linear(x, self.W(L + 'self_attn.q_proj.weight'), bias('q_proj'))
        k = F.linear(x, self.W(L + 'self_attn.k_proj.weight'), bias('k_proj'))
        v = F.linear(x, self.W(L + 'self_attn.v_proj.weight'), bias('v_proj'))
        eps = c['rms_norm_eps']
        if self.kind == 'olmoe':
            q = rms(q, self.W(L + 'self_attn.q_norm.weight'), eps)
            k = rms(k, self.W(L + 'self_attn.k_norm.weight'), eps)
        q = q.view(T, H, hd).transpose(0, 1)
        k = k.view(T, KV, hd).transpose(0, 1)
        v = v.view(T, KV, hd).transpose(0, 1)
        if self.kind == 'qwen3_moe':
            q = rms(q, self.W(L + 'self_attn.q_norm.weight'), eps)
            k = rms(k, self.W(L + 'self_attn.k_norm.weight'), eps)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=0)
        v = v.repeat_interleave(H // KV, dim=0)
        s = (q @ k.transpose(1, 2)) * c.get('attention_multiplier', hd ** -0.5)
        s = s + torch.triu(torch.full((T, T), float('-inf')), 1)
        li = int(L.split('.')[2])
        if c.get('sliding_window') and (c.get('layer_types') is None or c['layer_types'][li] == 'sliding_attention'):
            s = s + torch.tril(torch.full((T, T), float('-inf')), -c['sliding_window'])
        if (L + 'self_attn.sinks') in self.w:
            comb = torch.cat([s, self.W(L + 'self_attn.sinks').reshape(H, 1, 1).expand(H, T, 1)], dim=-1)
            comb = comb - comb.max(dim=-1, keepdim=True).values
            p = F.softmax(comb, dim=-1, dtype=torch.float32)[..., :-1]
        else:
            p = F.softmax(s, dim=-1, dtype=torch.float32)
        o = (p @ v).transpose(0, 1).reshape(T, H * hd)
        return F.linear(o, self.W(L + 'self_attn.o_proj.weight'), bias('o_proj'))

    def aux_loss(self):
        # transformers' load_balancing_loss_func: one loss over all layers' router logits
        E, K = self.E(), self.cfg['num_experts_per_tok']
        rw = F.softmax(torch.cat(self.router_logits, 0), dim=-1)
        _, sel = torch.topk(rw, K, dim=-1)
        mask = F.one_hot(sel, E).float()
        return torch.sum(mask.mean(0) * rw.mean(0).unsqueeze(0)) * E

    def forward(self, ids):
        c = self.cfg
        self.router_logits = []
        T = len(ids)
        inv, scale = inv_freq(c, c['qk_rope_head_dim'] if self.kind.startswith('deepseek') else self.hd)
        freqs = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos() * scale, emb.sin() * scale
        h = self.W('model.embed_tokens.weight')[torch.tensor(ids)] * c.get('embedding_multiplier', 1.0)
        rm = c.get('residual_multiplier', 1.0)
        eps = c['rms_norm_eps']
        for i in range(c['num_hidden_layers']):
            L = f'model.layers.{i}.'
            att = self.mla if self.kind.startswith('deepseek') else self.jet_attn if self.kind == 'jetmoe' else self.attn
            # JetMoeBlock builds its two norms with the default eps 1e-6, whatever rms_norm_eps says
            le = 1e-6 if self.kind == 'jetmoe' else eps
            h = h + att(rms(h, self.W(L + 'input_layernorm.weight'), le), L, cos, sin) * rm
            n = rms(h, self.W(L + 'post_attention_layernorm.weight'), le)
            if self.is_moe(i):
                h = h + self.moe(n, L + ('block_sparse_moe.' if self.kind in ('mixtral', 'granitemoe') else 'mlp.')) * rm
            else:
                h = h + self.mlp(n, L + 'mlp.') * rm
        h = rms(h, self.W('model.norm.weight'), eps)
        head = self.W('model.embed_tokens.weight') if c.get('tie_word_embeddings', False) else self.W('lm_head.weight')
        return F.linear(h, head) / c.get('logits_scaling', 1.0)


ARCH = {'jetmoe': 'JetMoeForCausalLM', 'gpt_oss': 'GptOssForCausalLM', 'granitemoe': 'GraniteMoeForCausalLM', 'deepseek_v3': 'DeepseekV3ForCausalLM', 'deepseek_v2': 'DeepseekV2ForCausalLM', 'mixtral': 'MixtralForCausalLM', 'qwen2_moe': 'Qwen2MoeForCausalLM', 'qwen3_moe': 'Qwen3MoeForCausalLM', 'olmoe': 'OlmoeForCausalLM', 'llama': 'LlamaForCausalLM', 'qwen2': 'Qwen2ForCausalLM'}
BASE = dict(vocab_size=48, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act='silu', tie_word_embeddings=False, initializer_range=0.02)

FIXTURES = [
    ('mixtral', 'mixtral', dict(num_local_experts=4, num_experts_per_tok=2, intermediate_size=8, router_aux_loss_coef=0.02, router_jitter_noise=0.0, sliding_window=None), {}),
    ('mixtral-bf16', 'mixtral', dict(num_local_experts=4, num_experts_per_tok=2, intermediate_size=8, rope_scaling={'rope_type': 'linear', 'factor': 2.0}), dict(wdtype=torch.bfloat16)),
    ('qwen2_moe', 'qwen2_moe', dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=8, intermediate_size=24, shared_expert_intermediate_size=12, norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[1], use_sliding_window=False), {}),
    ('qwen3_moe', 'qwen3_moe', dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=8, intermediate_size=24, head_dim=8, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[], rope_scaling={'rope_type': 'yarn', 'factor': 4.0, 'original_max_position_embeddings': 16}), {}),
    ('olmoe', 'olmoe', dict(num_experts=4, num_experts_per_tok=2, intermediate_size=8, norm_topk_prob=False, clip_qkv=None, num_key_value_heads=4, tie_word_embeddings=True), {}),
    ('llama', 'llama', dict(intermediate_size=24, rope_scaling={'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0, 'high_freq_factor': 4.0, 'original_max_position_embeddings': 8}, attention_bias=False, mlp_bias=False), {}),
    ('qwen2', 'qwen2', dict(intermediate_size=24, num_key_value_heads=1, use_sliding_window=False), {}),
    ('granitemoe', 'granitemoe', dict(num_local_experts=4, num_experts_per_tok=2, intermediate_size=8, attention_bias=True, embedding_multiplier=3.0, residual_multiplier=0.5, logits_scaling=2.0, attention_multiplier=0.3, tie_word_embeddings=True), {}),
    ('deepseek_v3', 'deepseek_v3', dict(num_key_value_heads=4, intermediate_size=24, moe_intermediate_size=8, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2, first_k_dense_replace=1, norm_topk_prob=True, routed_scaling_factor=2.5, q_lora_rank=8, kv_lora_rank=8, qk_nope_head_dim=4, qk_rope_head_dim=4, v_head_dim=4, rope_interleave=True, scoring_func='sigmoid', topk_method='noaux_tc', rope_scaling={'type': 'yarn', 'factor': 4.0, 'original_max_position_embeddings': 16, 'beta_fast': 32, 'beta_slow': 1, 'mscale': 1.0, 'mscale_all_dim': 1.0}), {}),
    ('deepseek_v2', 'deepseek_v2', dict(num_key_value_heads=4, intermediate_size=24, moe_intermediate_size=8, n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=3, n_group=4, topk_group=2, topk_method='group_limited_greedy', first_k_dense_replace=0, norm_topk_prob=False, routed_scaling_factor=2.0, q_lora_rank=None, kv_lora_rank=8, qk_nope_head_dim=4, qk_rope_head_dim=4, v_head_dim=6, scoring_func='softmax'), {}),
    ('gpt_oss', 'gpt_oss', dict(hidden_size=32, num_key_value_heads=2, head_dim=8, num_local_experts=4, num_experts_per_tok=2, intermediate_size=32, attention_bias=True, sliding_window=3, layer_types=['sliding_attention', 'full_attention'], swiglu_limit=2.0, router_aux_loss_coef=0.9, rope_scaling={'rope_type': 'yarn', 'factor': 4.0, 'original_max_position_embeddings': 16, 'beta_fast': 32.0, 'beta_slow': 1.0, 'truncate': False}), {}),
    # num_attention_heads = num_key_value_heads * num_experts_per_tok, head_dim = kv_channels (JetMoeConfig)
    ('jetmoe', 'jetmoe', dict(num_local_experts=4, num_experts_per_tok=2, intermediate_size=8, kv_channels=4, aux_loss_coef=0.01, activation_function='silu', rms_norm_eps=1e-5, tie_word_embeddings=True, attention_dropout=0.0), {}),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    only = set(sys.argv[1:])
    for idx, (name, kind, extra, opts) in enumerate(FIXTURES):
        if only and name not in only:
            continue
        cfg = dict(BASE, **extra)
        if kind == 'jetmoe':
            cfg.pop('hidden_act')
        g = torch.Generator().manual_seed(1000 + idx)
        m = Model(cfg, kind, g, **opts)
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        full = dict(architectures=[ARCH[kind]], model_type=kind, torch_dtype='bfloat16' if opts.get('wdtype') == torch.bfloat16 else 'float32', **cfg)
        if name == 'olmoe':
            # the v5 field form: rope_parameters instead of rope_theta
            full['rope_parameters'] = {'rope_type': 'default', 'rope_theta': full.pop('rope_theta')}
        with open(os.path.join(d, 'config.json'), 'w') as f:
            json.dump(full, f, indent=2)
        write_safetensors(os.path.join(d, 'model.safetensors'), {**m.w, **m.raw}, {'format': 'pt'})
        ids = torch.randint(0, cfg['vocab_size'], (10,), generator=g).tolist()
        with torch.no_grad():
            logits = m.forward(ids)
            extra_ref = {'aux_loss': m.aux_loss().reshape(1)} if m.router_logits else {}
            seq = list(ids[:4])
            for _ in range(6):
                seq.append(int(m.forward(seq)[-1].argmax()))
        write_safetensors(os.path.join(d, 'reference.safetensors'), {'input_ids': torch.tensor([ids], dtype=torch.int64), 'logits': logits.float(), 'greedy': torch.tensor(seq, dtype=torch.int64), **extra_ref})
        print(name, sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)), 'bytes')
    if only and 'mixtral-fused' not in only:
        return
    # the fused 3-D expert layout of recent transformers, same weights as 'mixtral'
    src = os.path.join(OUT, 'mixtral')
    d = os.path.join(OUT, 'mixtral-fused')
    os.makedirs(d, exist_ok=True)
    cfg = dict(BASE, **FIXTURES[0][2])
    m = Model(cfg, 'mixtral', torch.Generator().manual_seed(1000))
    w = {}
    for k, v in m.w.items():
        if '.experts.' not in k:
            w[k.replace('block_sparse_moe', 'mlp')] = v
    for i in range(cfg['num_hidden_layers']):
        P = f'model.layers.{i}.block_sparse_moe.experts.'
        E = cfg['num_local_experts']
        w[f'model.layers.{i}.mlp.experts.gate_up_proj'] = torch.stack([torch.cat([m.w[P + f'{e}.w1.weight'], m.w[P + f'{e}.w3.weight']], 0) for e in range(E)])
        w[f'model.layers.{i}.mlp.experts.down_proj'] = torch.stack([m.w[P + f'{e}.w2.weight'] for e in range(E)])
    with open(os.path.join(src, 'config.json')) as f:
        conf = f.read()
    with open(os.path.join(d, 'config.json'), 'w') as f:
        f.write(conf)
    with open(os.path.join(src, 'reference.safetensors'), 'rb') as f, open(os.path.join(d, 'reference.safetensors'), 'wb') as g:
        g.write(f.read())
    write_safetensors(os.path.join(d, 'model.safetensors'), w, {'format': 'pt'})
    print('mixtral-fused', os.path.getsize(os.path.join(d, 'model.safetensors')), 'bytes')


if __name__ == '__main__':
    main()
