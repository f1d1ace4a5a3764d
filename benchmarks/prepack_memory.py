"""Memory behind BENCHMARKS.md: RSS a single QMoE / MatMulNBits node adds after onnxruntime prepacks it.

    .venv/bin/python benchmarks/prepack_memory.py ACCURACY_LEVEL qmoe|mnb [BLOCK]   (e.g. 4 qmoe, 0 mnb, 4 qmoe 128)
"""
import numpy as np, onnxruntime as ort, sys, re
from onnx import helper as h, TensorProto as T, numpy_helper as nh
E, H, I = 16, 2048, 2048
bs = int(sys.argv[3]) if len(sys.argv) > 3 else 32
acc = int(sys.argv[1]); which = sys.argv[2]
rng = np.random.default_rng(0)
inits = []; nodes = []
if which == 'qmoe':
    fc1 = rng.integers(0,255,(E, 2*I, H//2), dtype=np.uint8); s1 = (rng.random((E,2*I,H//bs))*0.01).astype(np.float16)
    fc2 = rng.integers(0,255,(E, H, I//2), dtype=np.uint8); s2 = (rng.random((E,H,I//bs))*0.01).astype(np.float16)
    inits = [nh.from_array(fc1,'w1'), nh.from_array(s1,'s1'), nh.from_array(fc2,'w2'), nh.from_array(s2,'s2')]
    nodes = [h.make_node('QMoE', ['x','p','w1','s1','','w2','s2'], ['y'], domain='com.microsoft', k=1, activation_type='swiglu', swiglu_fusion=1, activation_alpha=1.0, activation_beta=0.0, expert_weight_bits=4, block_size=bs, accuracy_level=acc, normalize_routing_weights=1)]
    ins = [h.make_tensor_value_info('x', T.FLOAT, [1, H]), h.make_tensor_value_info('p', T.FLOAT, [1, E])]
    data = fc1.nbytes + fc2.nbytes + s1.nbytes + s2.nbytes
else:
    N = 16*3*2048
    B = rng.integers(0,255,(N, H//bs, bs//2), dtype=np.uint8); S = (rng.random((N, H//bs))*0.01).astype(np.float32)
    inits = [nh.from_array(B,'B'), nh.from_array(S,'S')]
    nodes = [h.make_node('MatMulNBits', ['x','B','S'], ['y'], domain='com.microsoft', K=H, N=N, bits=4, block_size=bs, accuracy_level=acc)]
    ins = [h.make_tensor_value_info('x', T.FLOAT, [1, H])]
    data = B.nbytes + S.nbytes
g = h.make_graph(nodes, 'g', ins, [h.make_tensor_value_info('y', T.FLOAT, None)], inits)
m = h.make_model(g, opset_imports=[h.make_opsetid('',21), h.make_opsetid('com.microsoft',1)])
import onnx; onnx.save(m, '/tmp/zaya_prepack.onnx', save_as_external_data=True, location="zaya_prepack.data")
del inits, m, g
import gc; gc.collect()
def rss(): return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])/2**20
r0 = rss()
so = ort.SessionOptions(); so.intra_op_num_threads = 1
s = ort.InferenceSession('/tmp/zaya_prepack.onnx', so, providers=['CPUExecutionProvider'])
print(which, 'acc', acc, f'data {data/2**30:.3f} GiB  session rss +{rss()-r0:.3f} GiB')
