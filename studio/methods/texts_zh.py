"""The method explanations in Simplified Chinese, one per row of the method table (a test checks that
every method has one). Kept beside the English texts' modules' ``EXPLAIN`` so both change together."""
from __future__ import annotations

from studio.methods.base import Explain

LABELS_ZH: dict[str, str] = {
    "lora": "LoRA", "qlora": "QLoRA", "adalora": "AdaLoRA", "vera": "VeRA", "loha": "LoHa", "lokr": "LoKr",
    "oft": "OFT", "boft": "BOFT（蝶形正交微调）", "longlora": "LongLoRA 式（LoRA + 词嵌入 + 归一化层）", "ia3": "IA3", "prompt_tuning": "提示词微调 (Prompt tuning)",
    "prefix_tuning": "前缀微调 (Prefix tuning)", "p_tuning": "P-tuning", "bitfit": "BitFit（仅偏置）",
    "freeze": "冻结微调（最后几层）", "full": "全参数微调",
}

FAMILY_ZH = {"reparameterisation": "重参数化", "additive": "加性", "selective": "选择性", "full": "全参数"}

EXPLAIN_ZH: dict[str, Explain] = {
    "lora": Explain(
        summary="冻结模型，在选定层旁训练两个小矩阵；结果是一个很小的适配器文件（几 MB），可以开关，也可以合并进模型。",
        memory="模型权重按 16 位存放（每参数 2 字节）加上激活值；可训练部分远小于模型的 1%。约为全参数微调显存的一半。",
        speed="与冻结模型的一次前向和反向传播差不多快。DoRA 慢约 10-30%。",
        when="模型能以 16 位装进显存时的默认选择。装不下选 QLoRA；想让秩自动分配到各层选 AdaLoRA。"),
    "qlora": Explain(
        summary="在 4 位（或 8 位）量化的模型上训练 LoRA 适配器：同样的小适配器，显存约为 LoRA 的三分之一。",
        memory="模型按 4 位存放（每参数约 0.5 字节）加上 LoRA 和激活值。",
        speed="比 LoRA 慢约 20-40%：每一层在计算前都要反量化。",
        when="模型以 16 位装不下时；质量接近 LoRA。需要 bitsandbytes。"),
    "adalora": Explain(
        summary="先在各层用较大的秩训练 LoRA，训练中把秩转移到最重要的层，最后平均秩更小。",
        memory="与初始秩（init_r）的 LoRA 相当，另加同样大小的重要性统计。",
        speed="比 LoRA 稍慢：每步之后都要给每个秩分量打分。",
        when="不确定哪些层需要容量，并且训练足够长（至少几十步）以完成预热、剪枝和收尾阶段。"),
    "vera": Explain(
        summary="类似 LoRA，但两个矩阵是随机、冻结并在所有层之间共享的；每层只学习两个缩放向量。可训练参数约为 LoRA 的十分之一。",
        memory="冻结模型加上共享随机矩阵（r × 最宽层，仅一份）和很小的向量。",
        speed="每步与 LoRA 相近；通常需要更高的学习率和更多步数才能达到 LoRA 的效果。",
        when="同一基础模型上要放很多适配器，或文件越小越好，比最后一点质量更重要时。"),
    "loha": Explain(
        summary="类似 LoRA，但更新是两组低秩矩阵的逐元素乘积：同样的 r 下参数是 LoRA 的两倍，但更新的秩更高、表达更丰富。",
        memory="相当于两倍秩的 LoRA，训练时另加逐元素乘积。",
        speed="比 LoRA 慢：每步都要为每个适配层重建完整大小的更新矩阵。",
        when="在能承受的秩下 LoRA 欠拟合、希望更新更有表达力时；在图像模型中很常用。"),
    "lokr": Explain(
        summary="把每层的更新写成两个小矩阵的克罗内克积：用很少的参数得到满秩的更新（多数层比 LoRA r8 还少）。",
        memory="冻结模型加上很小的因子；训练时逐层构建完整大小的更新。",
        speed="比 LoRA 慢：每步都要为每个适配层重建克罗内克积。",
        when="希望得到与 LoRA 相近的效果但文件更小，或 LoRA 的低秩限制了学习时。"),
    "oft": Explain(
        summary="把每个适配层的权重乘以一个由小块组成的正交（旋转）矩阵：神经元一起旋转、彼此关系不变，比加性更新遗忘更少。",
        memory="冻结模型加上各块参数（每层每个输入特征约 block_size/2 个）。",
        speed="比 LoRA 慢：每步都要由参数重建旋转矩阵（Cayley 变换）。",
        when="想改变行为又尽量保留基础模型的知识；适合小数据。层的大小须能被块大小整除。"),
    "boft": Explain(
        summary="正交微调（与 OFT 相同：旋转每个适配层的权重，保持神经元之间的关系），但旋转由一串小的蝶形块组成（类似 FFT）：f 个因子、大小为 b 的块能混合 b × 2^(f-1) 个输入特征，每个输入特征训练 f × b 个数。",
        memory="可训练参数很少，但 peft 为每个适配层保存稠密的 in × in 置换矩阵，反向传播时每层还要保留若干 in × in 矩阵：随层宽的平方增长，因此默认只适配注意力层。",
        speed="比 LoRA 和 OFT 慢：每步都要重建并乘出旋转矩阵。需要 peft 的 CUDA 扩展（首次使用时编译）：在 CPU 上会被拒绝，因为 peft 会悄悄退化为普通 OFT。",
        when="在 GPU 上，想要 OFT 那样保留知识的更新、又希望旋转跨越比单个小块更大的范围时。CPU 上请选 OFT。"),
    "longlora": Explain(
        summary="LoRA 加上可训练的词嵌入和归一化层（LongLoRA 的 \"LoRA+\"），用于让模型适应更长的上下文。不包含 LongLoRA 的移位稀疏注意力。",
        memory="LoRA 的显存，加上词嵌入矩阵及其梯度和优化器状态（词表 × 隐藏维 × 约 16 字节），以及长上下文的激活值。",
        speed="与相同截断长度下的 LoRA 相当；慢在长截断本身。",
        when="扩展可用上下文（长文档，几千个 token 的截断长度）。短样本用普通 LoRA 更省。"),
    "ia3": Explain(
        summary="为每个适配层学习一个缩放向量（键、值、前馈激活）：重新缩放模型自身的激活，前向计算中不增加新的东西。",
        memory="几乎只有冻结模型：这些向量约占参数的 0.05%。",
        speed="与 LoRA 一样快或稍快；推理时可合并进权重。",
        when="数据很少（几百行）或同一基础模型上有很多任务：文件极小、不易过拟合。数据量大时学到的比 LoRA 少。"),
    "prompt_tuning": Explain(
        summary="学习几个放在每个输入前面的虚拟 token；模型权重完全不变。",
        memory="冻结模型加上额外 token 的激活；训练的部分只有几千个数。",
        speed="每步还要处理虚拟 token（比 LoRA 稍慢）；学得慢，需要更多步数。",
        when="在大模型上用少量数据控制风格或格式（论文：约 100 亿参数以上才追上全参数微调）。不能合并；仅限文本模型。"),
    "prefix_tuning": Explain(
        summary="学习每个注意力层在输入之前看到的键和值向量（P-tuning v2 思路相同）；权重不变。",
        memory="冻结模型加上前缀（层数 × 2 × token 数 × 键值维度）及其注意力。",
        speed="比 LoRA 稍慢（注意力更长）；收敛更慢。",
        when="格式固定的生成任务，或希望在同一基础模型上以极小文件保存多个任务。不能合并；仅限文本模型。"),
    "p_tuning": Explain(
        summary="学习放在每个输入前的虚拟 token，由一个小编码器（MLP 或 LSTM）生成，比普通提示词微调训练更稳定。",
        memory="冻结模型加上编码器（远小于模型的 1%）和额外 token 的激活。",
        speed="与提示词微调相同：每步比 LoRA 稍慢，需要更多步数。",
        when="少量数据上的分类类或格式类任务；文件极小。不能合并；仅限文本模型。"),
    "bitfit": Explain(
        summary="只训练偏置向量（每个适配的线性层一个）；所有权重矩阵保持冻结。层本身没有偏置时（Llama 类模型）会新加一个，从零开始。",
        memory="冻结模型加上每层一个向量：除提示词微调外训练部分最小。",
        speed="与冻结模型的前向和反向传播差不多快。",
        when="数据极少，或快速验证微调是否有用；学到的比 LoRA 少。作为适配器保存（不合并），适用于所有模型。"),
    "freeze": Explain(
        summary="完整训练最后几个解码层，冻结其下所有层：保留模型的通用特征，只让顶层适应新任务。",
        memory="模型本身，加上所选层的可训练副本及其梯度和优化器状态（每个训练参数约 16 字节）：介于 LoRA 与全参数微调之间。",
        speed="快：反向传播到第一个训练层为止。",
        when="中等规模数据、LoRA 欠拟合而全参数微调装不下时；适配器与所训练的层一样大。可以合并。"),
    "full": Explain(
        summary="训练语言模型的所有权重（词嵌入与输出层绑定时除外）。能力最强、代价最高，是所有 PEFT 论文的对照基线。",
        memory="模型两份（冻结原件和训练副本），加上每个权重的梯度和 AdamW 状态：每参数约 18 字节，是 LoRA 的 6-8 倍。",
        speed="最慢：所有权重都有梯度和优化器更新；适配器与模型一样大。",
        when="大数据集（数万行以上）、新语言或新领域，并且 GPU 显存足够。小数据集容易过拟合：用 LoRA。"),
}
