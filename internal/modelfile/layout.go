package modelfile

import (
	"fmt"
	"strings"

	"github.com/kiln-gpu/kiln/internal/workflow"
)

// tspec is one tensor of a layout before it is placed in a file.
type tspec struct {
	name  string
	dtype string
	shape []int64
}

func (t tspec) bytes() int64 {
	n := DTypeSize(t.dtype)
	for _, d := range t.shape {
		n *= d
	}
	return n
}

type layout []tspec

func (l *layout) add(name, dtype string, shape ...int64) {
	*l = append(*l, tspec{name: name, dtype: dtype, shape: shape})
}

// linear adds a weight and its bias.
func (l *layout) linear(p, dt string, out, in int64) {
	l.add(p+".weight", dt, out, in)
	l.add(p+".bias", dt, out)
}

func (l *layout) conv(p, dt string, out, in, k int64) {
	l.add(p+".weight", dt, out, in, k, k)
	l.add(p+".bias", dt, out)
}

func (l *layout) norm(p, dt string, c int64) {
	l.add(p+".weight", dt, c)
	l.add(p+".bias", dt, c)
}

// layoutFor returns the full-size tensor table of a model of the family.
// The tables follow the real files' names and shapes closely enough for a
// loader to recognise the architecture; they are not exact copies.
func layoutFor(family, id string) layout {
	var l layout
	lower := strings.ToLower(id)
	fp8 := strings.Contains(lower, "fp8")
	ckpt := strings.HasPrefix(lower, "checkpoints/")
	switch family {
	case workflow.FamilySD15:
		l.unet("model.diffusion_model.", "F16", []int64{320, 640, 1280, 1280}, []int{1, 1, 1, 0}, 768, false, 0)
		l.vae("first_stage_model.", "F16", 4)
		l.clipText("cond_stage_model.transformer.text_model.", "F16", 768, 12)
	case workflow.FamilySDXL:
		if strings.Contains(lower, "refiner") {
			l.unet("model.diffusion_model.", "F16", []int64{384, 768, 1536, 1536}, []int{0, 4, 4, 0}, 1280, true, 2560)
		} else {
			l.unet("model.diffusion_model.", "F16", []int64{320, 640, 1280}, []int{0, 2, 10}, 2048, true, 2816)
			l.clipText("conditioner.embedders.0.transformer.text_model.", "F16", 768, 12)
		}
		l.openCLIP("conditioner.embedders.1.model.", "F16", 1280, 32)
		l.vae("first_stage_model.", "F16", 4)
	case workflow.FamilySD3:
		l.mmdit("model.diffusion_model.", "F16", 1536, 24)
		l.vae("first_stage_model.", "F16", 16)
		l.clipText("text_encoders.clip_l.transformer.text_model.", "F16", 768, 12)
		l.clipText("text_encoders.clip_g.transformer.text_model.", "F16", 1280, 32)
		if strings.Contains(lower, "t5") {
			dt := "F16"
			if fp8 {
				dt = "F8_E4M3"
			}
			l.t5("text_encoders.t5xxl.transformer.", dt)
		}
	case workflow.FamilyFlux:
		dt := "BF16"
		if fp8 {
			dt = "F8_E4M3"
		}
		p := ""
		if ckpt {
			p = "model.diffusion_model."
		}
		l.flux(p, dt)
		if ckpt {
			l.vae("vae.", "BF16", 16)
			l.clipText("text_encoders.clip_l.transformer.text_model.", "F16", 768, 12)
			l.t5("text_encoders.t5xxl.transformer.", "F8_E4M3")
		}
	case workflow.FamilyLoRA:
		rank, ctx, chans := int64(16), int64(768), []int64{320, 640, 1280}
		if strings.Contains(lower, "xl") {
			rank, ctx, chans = 32, 2048, []int64{640, 1280}
		}
		l.lora(rank, ctx, chans)
	case workflow.FamilyVAE:
		ch := int64(4)
		if strings.Contains(lower, "ae.safetensors") || strings.Contains(lower, "flux") || strings.Contains(lower, "sd3") {
			ch = 16
		}
		l.vae("", "F32", ch)
	case workflow.FamilyControlNet:
		if strings.Contains(lower, "xl") {
			l.controlNet("control_model.", "F16", []int64{320, 640, 1280}, []int{0, 2, 10}, 2048, true)
		} else {
			l.controlNet("control_model.", "F16", []int64{320, 640, 1280, 1280}, []int{1, 1, 1, 0}, 768, false)
		}
	case workflow.FamilyUpscaler:
		l.esrgan()
	case workflow.FamilyTextEncoder:
		switch {
		case strings.Contains(lower, "t5"):
			dt := "F16"
			if fp8 {
				dt = "F8_E4M3"
			}
			l.t5("", dt)
		case strings.Contains(lower, "clip_g"):
			l.clipText("text_model.", "F16", 1280, 32)
			l.add("text_projection.weight", "F16", 1280, 1280)
		default:
			l.clipText("text_model.", "F16", 768, 12)
			l.add("text_projection.weight", "F16", 768, 768)
		}
	case workflow.FamilyCLIPVision:
		l.conv("vision_model.embeddings.patch_embedding", "F16", 1280, 3, 14)
		l.add("vision_model.embeddings.class_embedding", "F16", 1280)
		l.add("vision_model.embeddings.position_embedding.weight", "F16", 257, 1280)
		l.encoderLayers("vision_model.encoder.", "F16", 1280, 32)
		l.norm("vision_model.post_layernorm", "F16", 1280)
		l.add("visual_projection.weight", "F16", 1024, 1280)
	default:
		for i := range 24 {
			l.linear(fmt.Sprintf("model.layers.%d.proj", i), "F16", 1024, 1024)
		}
	}
	return l
}

func (l *layout) resBlock(p, dt string, cin, c, emb int64) {
	l.norm(p+"in_layers.0", dt, cin)
	l.conv(p+"in_layers.2", dt, c, cin, 3)
	l.linear(p+"emb_layers.1", dt, c, emb)
	l.norm(p+"out_layers.0", dt, c)
	l.conv(p+"out_layers.3", dt, c, c, 3)
	if cin != c {
		l.conv(p+"skip_connection", dt, c, cin, 1)
	}
}

func (l *layout) spatialTransformer(p, dt string, c int64, depth int, ctx int64, linearProj bool) {
	l.norm(p+"norm", dt, c)
	if linearProj {
		l.linear(p+"proj_in", dt, c, c)
	} else {
		l.conv(p+"proj_in", dt, c, c, 1)
	}
	for d := range depth {
		b := fmt.Sprintf("%stransformer_blocks.%d.", p, d)
		l.add(b+"attn1.to_q.weight", dt, c, c)
		l.add(b+"attn1.to_k.weight", dt, c, c)
		l.add(b+"attn1.to_v.weight", dt, c, c)
		l.linear(b+"attn1.to_out.0", dt, c, c)
		l.linear(b+"ff.net.0.proj", dt, 8*c, c)
		l.linear(b+"ff.net.2", dt, c, 4*c)
		l.add(b+"attn2.to_q.weight", dt, c, c)
		l.add(b+"attn2.to_k.weight", dt, c, ctx)
		l.add(b+"attn2.to_v.weight", dt, c, ctx)
		l.linear(b+"attn2.to_out.0", dt, c, c)
		l.norm(b+"norm1", dt, c)
		l.norm(b+"norm2", dt, c)
		l.norm(b+"norm3", dt, c)
	}
	if linearProj {
		l.linear(p+"proj_out", dt, c, c)
	} else {
		l.conv(p+"proj_out", dt, c, c, 1)
	}
}

// unetEncoder adds the time embedding, input blocks and middle block of an
// LDM UNet and returns the channels of each input block, for the skips.
func (l *layout) unetEncoder(p, dt string, chans []int64, depth []int, ctx int64, linearProj bool, adm int64) []int64 {
	emb := 4 * chans[0]
	l.linear(p+"time_embed.0", dt, emb, chans[0])
	l.linear(p+"time_embed.2", dt, emb, emb)
	if adm > 0 {
		l.linear(p+"label_emb.0.0", dt, emb, adm)
		l.linear(p+"label_emb.0.2", dt, emb, emb)
	}
	l.conv(p+"input_blocks.0.0", dt, chans[0], 4, 3)
	skips := []int64{chans[0]}
	idx, cin := 1, chans[0]
	for lvl, c := range chans {
		for range 2 {
			b := fmt.Sprintf("%sinput_blocks.%d.", p, idx)
			l.resBlock(b+"0.", dt, cin, c, emb)
			if depth[lvl] > 0 {
				l.spatialTransformer(b+"1.", dt, c, depth[lvl], ctx, linearProj)
			}
			cin = c
			skips = append(skips, c)
			idx++
		}
		if lvl < len(chans)-1 {
			l.conv(fmt.Sprintf("%sinput_blocks.%d.0.op", p, idx), dt, c, c, 3)
			skips = append(skips, c)
			idx++
		}
	}
	last := chans[len(chans)-1]
	l.resBlock(p+"middle_block.0.", dt, last, last, emb)
	l.spatialTransformer(p+"middle_block.1.", dt, last, max(depth[len(depth)-1], 1), ctx, linearProj)
	l.resBlock(p+"middle_block.2.", dt, last, last, emb)
	return skips
}

func (l *layout) unet(p, dt string, chans []int64, depth []int, ctx int64, linearProj bool, adm int64) {
	skips := l.unetEncoder(p, dt, chans, depth, ctx, linearProj, adm)
	emb := 4 * chans[0]
	idx, cin := 0, chans[len(chans)-1]
	for lvl := len(chans) - 1; lvl >= 0; lvl-- {
		c := chans[lvl]
		for i := range 3 {
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			b := fmt.Sprintf("%soutput_blocks.%d.", p, idx)
			l.resBlock(b+"0.", dt, cin+skip, c, emb)
			sub := 1
			if depth[lvl] > 0 {
				l.spatialTransformer(b+"1.", dt, c, depth[lvl], ctx, linearProj)
				sub = 2
			}
			if i == 2 && lvl > 0 {
				l.conv(fmt.Sprintf("%s%d.conv", b, sub), dt, c, c, 3)
			}
			cin = c
			idx++
		}
	}
	l.norm(p+"out.0", dt, chans[0])
	l.conv(p+"out.2", dt, 4, chans[0], 3)
}

func (l *layout) controlNet(p, dt string, chans []int64, depth []int, ctx int64, linearProj bool) {
	hint := []int64{3, 16, 16, 32, 32, 96, 96, 256}
	for i := 0; i+1 < len(hint); i++ {
		l.conv(fmt.Sprintf("%sinput_hint_block.%d", p, 2*i), dt, hint[i+1], hint[i], 3)
	}
	l.conv(fmt.Sprintf("%sinput_hint_block.%d", p, 2*(len(hint)-1)), dt, chans[0], 256, 3)
	skips := l.unetEncoder(p, dt, chans, depth, ctx, linearProj, 0)
	for i, c := range skips {
		l.conv(fmt.Sprintf("%szero_convs.%d.0", p, i), dt, c, c, 1)
	}
	last := chans[len(chans)-1]
	l.conv(p+"middle_block_out.0", dt, last, last, 1)
}

func (l *layout) vae(p, dt string, latent int64) {
	chans := []int64{128, 256, 512, 512}
	l.conv(p+"encoder.conv_in", dt, 128, 3, 3)
	cin := int64(128)
	for i, c := range chans {
		for j := range 2 {
			l.vaeBlock(fmt.Sprintf("%sencoder.down.%d.block.%d.", p, i, j), dt, cin, c)
			cin = c
		}
		if i < len(chans)-1 {
			l.conv(fmt.Sprintf("%sencoder.down.%d.downsample.conv", p, i), dt, c, c, 3)
		}
	}
	l.vaeMid(p+"encoder.mid.", dt)
	l.norm(p+"encoder.norm_out", dt, 512)
	l.conv(p+"encoder.conv_out", dt, 2*latent, 512, 3)
	l.conv(p+"decoder.conv_in", dt, 512, latent, 3)
	l.vaeMid(p+"decoder.mid.", dt)
	cin = 512
	for i := len(chans) - 1; i >= 0; i-- {
		c := chans[i]
		for j := range 3 {
			l.vaeBlock(fmt.Sprintf("%sdecoder.up.%d.block.%d.", p, i, j), dt, cin, c)
			cin = c
		}
		if i > 0 {
			l.conv(fmt.Sprintf("%sdecoder.up.%d.upsample.conv", p, i), dt, c, c, 3)
		}
	}
	l.norm(p+"decoder.norm_out", dt, 128)
	l.conv(p+"decoder.conv_out", dt, 3, 128, 3)
	if latent == 4 {
		l.conv(p+"quant_conv", dt, 8, 8, 1)
		l.conv(p+"post_quant_conv", dt, 4, 4, 1)
	}
}

func (l *layout) vaeBlock(p, dt string, cin, c int64) {
	l.norm(p+"norm1", dt, cin)
	l.conv(p+"conv1", dt, c, cin, 3)
	l.norm(p+"norm2", dt, c)
	l.conv(p+"conv2", dt, c, c, 3)
	if cin != c {
		l.conv(p+"nin_shortcut", dt, c, cin, 1)
	}
}

func (l *layout) vaeMid(p, dt string) {
	l.vaeBlock(p+"block_1.", dt, 512, 512)
	l.norm(p+"attn_1.norm", dt, 512)
	for _, n := range []string{"q", "k", "v", "proj_out"} {
		l.conv(p+"attn_1."+n, dt, 512, 512, 1)
	}
	l.vaeBlock(p+"block_2.", dt, 512, 512)
}

func (l *layout) encoderLayers(p, dt string, w int64, layers int) {
	for i := range layers {
		b := fmt.Sprintf("%slayers.%d.", p, i)
		for _, n := range []string{"k_proj", "v_proj", "q_proj", "out_proj"} {
			l.linear(b+"self_attn."+n, dt, w, w)
		}
		l.norm(b+"layer_norm1", dt, w)
		l.linear(b+"mlp.fc1", dt, 4*w, w)
		l.linear(b+"mlp.fc2", dt, w, 4*w)
		l.norm(b+"layer_norm2", dt, w)
	}
}

func (l *layout) clipText(p, dt string, w int64, layers int) {
	l.add(p+"embeddings.token_embedding.weight", dt, 49408, w)
	l.add(p+"embeddings.position_embedding.weight", dt, 77, w)
	l.encoderLayers(p+"encoder.", dt, w, layers)
	l.norm(p+"final_layer_norm", dt, w)
}

func (l *layout) openCLIP(p, dt string, w int64, layers int) {
	l.add(p+"token_embedding.weight", dt, 49408, w)
	l.add(p+"positional_embedding", dt, 77, w)
	for i := range layers {
		b := fmt.Sprintf("%stransformer.resblocks.%d.", p, i)
		l.add(b+"attn.in_proj_weight", dt, 3*w, w)
		l.add(b+"attn.in_proj_bias", dt, 3*w)
		l.linear(b+"attn.out_proj", dt, w, w)
		l.norm(b+"ln_1", dt, w)
		l.linear(b+"mlp.c_fc", dt, 4*w, w)
		l.linear(b+"mlp.c_proj", dt, w, 4*w)
		l.norm(b+"ln_2", dt, w)
	}
	l.norm(p+"ln_final", dt, w)
	l.add(p+"text_projection", dt, w, w)
}

func (l *layout) t5(p, dt string) {
	const d, ff = 4096, 10240
	l.add(p+"shared.weight", dt, 32128, d)
	for i := range 24 {
		b := fmt.Sprintf("%sencoder.block.%d.layer.", p, i)
		for _, n := range []string{"q", "k", "v", "o"} {
			l.add(b+"0.SelfAttention."+n+".weight", dt, d, d)
		}
		if i == 0 {
			l.add(b+"0.SelfAttention.relative_attention_bias.weight", dt, 32, 64)
		}
		l.add(b+"0.layer_norm.weight", dt, d)
		l.add(b+"1.DenseReluDense.wi_0.weight", dt, ff, d)
		l.add(b+"1.DenseReluDense.wi_1.weight", dt, ff, d)
		l.add(b+"1.DenseReluDense.wo.weight", dt, d, ff)
		l.add(b+"1.layer_norm.weight", dt, d)
	}
	l.add(p+"encoder.final_layer_norm.weight", dt, d)
}

func (l *layout) flux(p, dt string) {
	const h, mlp = 3072, 12288
	nt := "BF16" // norms and biases stay bf16 in fp8 files
	l.linear(p+"img_in", dt, h, 64)
	l.linear(p+"time_in.in_layer", dt, h, 256)
	l.linear(p+"time_in.out_layer", dt, h, h)
	l.linear(p+"vector_in.in_layer", dt, h, 768)
	l.linear(p+"vector_in.out_layer", dt, h, h)
	l.linear(p+"guidance_in.in_layer", dt, h, 256)
	l.linear(p+"guidance_in.out_layer", dt, h, h)
	l.linear(p+"txt_in", dt, h, 4096)
	for i := range 19 {
		for _, s := range []string{"img", "txt"} {
			b := fmt.Sprintf("%sdouble_blocks.%d.%s_", p, i, s)
			l.linear(b+"attn.qkv", dt, 3*h, h)
			l.linear(b+"attn.proj", dt, h, h)
			l.add(b+"attn.norm.query_norm.scale", nt, 128)
			l.add(b+"attn.norm.key_norm.scale", nt, 128)
			l.linear(b+"mlp.0", dt, mlp, h)
			l.linear(b+"mlp.2", dt, h, mlp)
			l.linear(b+"mod.lin", dt, 6*h, h)
		}
	}
	for i := range 38 {
		b := fmt.Sprintf("%ssingle_blocks.%d.", p, i)
		l.linear(b+"linear1", dt, 3*h+mlp, h)
		l.linear(b+"linear2", dt, h, h+mlp)
		l.linear(b+"modulation.lin", dt, 3*h, h)
		l.add(b+"norm.query_norm.scale", nt, 128)
		l.add(b+"norm.key_norm.scale", nt, 128)
	}
	l.linear(p+"final_layer.adaLN_modulation.1", dt, 2*h, h)
	l.linear(p+"final_layer.linear", dt, 64, h)
}

func (l *layout) mmdit(p, dt string, h int64, depth int) {
	l.add(p+"pos_embed", dt, 1, 36864, h)
	l.conv(p+"x_embedder.proj", dt, h, 16, 2)
	l.linear(p+"context_embedder", dt, h, 4096)
	l.linear(p+"t_embedder.mlp.0", dt, h, 256)
	l.linear(p+"t_embedder.mlp.2", dt, h, h)
	l.linear(p+"y_embedder.mlp.0", dt, h, 2048)
	l.linear(p+"y_embedder.mlp.2", dt, h, h)
	for i := range depth {
		for _, s := range []string{"x_block", "context_block"} {
			b := fmt.Sprintf("%sjoint_blocks.%d.%s.", p, i, s)
			l.linear(b+"attn.qkv", dt, 3*h, h)
			l.linear(b+"attn.proj", dt, h, h)
			l.linear(b+"mlp.fc1", dt, 4*h, h)
			l.linear(b+"mlp.fc2", dt, h, 4*h)
			l.linear(b+"adaLN_modulation.1", dt, 6*h, h)
		}
	}
	l.linear(p+"final_layer.adaLN_modulation.1", dt, 2*h, h)
	l.linear(p+"final_layer.linear", dt, 64, h)
}

func (l *layout) lora(rank, ctx int64, chans []int64) {
	pair := func(name string, out, in int64) {
		l.add(name+".lora_down.weight", "F16", rank, in)
		l.add(name+".lora_up.weight", "F16", out, rank)
		l.add(name+".alpha", "F16")
	}
	for bi, c := range chans {
		for a := range 2 {
			p := fmt.Sprintf("lora_unet_down_blocks_%d_attentions_%d_", bi, a)
			l.loraAttn(pair, p, c, ctx)
		}
	}
	for bi := range chans {
		c := chans[len(chans)-1-bi]
		for a := range 3 {
			p := fmt.Sprintf("lora_unet_up_blocks_%d_attentions_%d_", bi, a)
			l.loraAttn(pair, p, c, ctx)
		}
	}
	l.loraAttn(pair, "lora_unet_mid_block_attentions_0_", chans[len(chans)-1], ctx)
	for i := range 12 {
		p := fmt.Sprintf("lora_te_text_model_encoder_layers_%d_", i)
		for _, n := range []string{"q_proj", "k_proj", "v_proj", "out_proj"} {
			pair(p+"self_attn_"+n, 768, 768)
		}
		pair(p+"mlp_fc1", 3072, 768)
		pair(p+"mlp_fc2", 768, 3072)
	}
}

func (l *layout) loraAttn(pair func(string, int64, int64), p string, c, ctx int64) {
	pair(p+"proj_in", c, c)
	b := p + "transformer_blocks_0_"
	for _, n := range []string{"attn1_to_q", "attn1_to_k", "attn1_to_v", "attn1_to_out_0", "attn2_to_q", "attn2_to_out_0"} {
		pair(b+n, c, c)
	}
	pair(b+"attn2_to_k", c, ctx)
	pair(b+"attn2_to_v", c, ctx)
	pair(b+"ff_net_0_proj", 8*c, c)
	pair(b+"ff_net_2", c, 4*c)
	pair(p+"proj_out", c, c)
}

func (l *layout) esrgan() {
	const nf, gc = 64, 32
	l.conv("model.0", "F32", nf, 3, 3)
	for b := range 23 {
		for r := 1; r <= 3; r++ {
			for c := 1; c <= 5; c++ {
				out := int64(gc)
				if c == 5 {
					out = nf
				}
				l.conv(fmt.Sprintf("model.1.sub.%d.RDB%d.conv%d.0", b, r, c), "F32", out, nf+int64(c-1)*gc, 3)
			}
		}
	}
	l.conv("model.1.sub.23", "F32", nf, nf, 3)
	for _, i := range []int{3, 6, 8} {
		l.conv(fmt.Sprintf("model.%d", i), "F32", nf, nf, 3)
	}
	l.conv("model.10", "F32", 3, nf, 3)
}
