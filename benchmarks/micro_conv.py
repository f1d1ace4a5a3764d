"""Micro-benchmark behind BENCHMARKS.md: CCA conv as two Convs vs one composed Conv vs a MatMul form.

    .venv/bin/python benchmarks/micro_conv.py
"""
import numpy as np, onnxruntime as ort, time
from onnx import helper as h, TensorProto as T, numpy_helper as nh
C, G, D = 1280, 10, 128
rng = np.random.default_rng(0)
def sess(nodes, inits, ins):
    g = h.make_graph(nodes, 'g', ins, [h.make_tensor_value_info('y', T.FLOAT, None)], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid('',21)])
    so = ort.SessionOptions(); so.intra_op_num_threads=1
    return ort.InferenceSession(m.SerializeToString(), so, providers=['CPUExecutionProvider'])
def bench(s, feed):
    for _ in range(20): s.run(None, feed)
    ts=[]
    for _ in range(200):
        t=time.perf_counter(); s.run(None, feed); ts.append(time.perf_counter()-t)
    return np.median(ts)*1e6
for S in (1, 64):
    x = rng.standard_normal((1, C, S+2)).astype(np.float32)
    wd = rng.standard_normal((C,1,2)).astype(np.float32); bd = rng.standard_normal(C).astype(np.float32)
    wg = rng.standard_normal((C,D,2)).astype(np.float32); bg = rng.standard_normal(C).astype(np.float32)
    two = sess([h.make_node('Conv',['x','wd','bd'],['d'],group=C,kernel_shape=[2]), h.make_node('Conv',['d','wg','bg'],['y'],group=G,kernel_shape=[2])],
               [nh.from_array(wd,'wd'),nh.from_array(bd,'bd'),nh.from_array(wg,'wg'),nh.from_array(bg,'bg')], [h.make_tensor_value_info('x',T.FLOAT,[1,C,None])])
    w3 = rng.standard_normal((C,D,3)).astype(np.float32)
    one = sess([h.make_node('Conv',['x','w3','bg'],['y'],group=G,kernel_shape=[3])], [nh.from_array(w3,'w3'),nh.from_array(bg,'bg')], [h.make_tensor_value_info('x',T.FLOAT,[1,C,None])])
    # matmul formulation: x tokens-first [1, S+2, C]
    xt = np.ascontiguousarray(x.transpose(0,2,1))
    wm = rng.standard_normal((G, 3*D, D)).astype(np.float32)
    i64 = lambda n, v: nh.from_array(np.array(v, np.int64), n)
    nodes = [h.make_node('Slice',['x','s0','e0','ax'],['a']), h.make_node('Slice',['x','s1','e1','ax'],['b']), h.make_node('Slice',['x','s2','e2','ax'],['c']),
             h.make_node('Reshape',['a','r4'],['a4']), h.make_node('Reshape',['b','r4'],['b4']), h.make_node('Reshape',['c','r4'],['c4']),
             h.make_node('Concat',['a4','b4','c4'],['w'],axis=3), h.make_node('Reshape',['w','r5'],['w5']),
             h.make_node('MatMul',['w5','wm'],['o']), h.make_node('Reshape',['o','r3'],['y0']), h.make_node('Add',['y0','bg'],['y'])]
    inits = [nh.from_array(wm,'wm'), nh.from_array(bg,'bg'), i64('s0',[0]), i64('e0',[-2]), i64('s1',[1]), i64('e1',[-1]), i64('s2',[2]), i64('e2',[2**62]), i64('ax',[1]),
             i64('r4',[0,0,G,1,D]), i64('r5',[0,0,G,1,3*D]), i64('r3',[0,0,C])]
    # r4 reshape [1,S,C]->[1,S,G,1,D]; concat on axis 3 -> [1,S,G,3,D] -> [1,S,G,1,3D] @ [G,3D,D] -> [1,S,G,1,D]
    nodes[6] = h.make_node('Concat',['a4','b4','c4'],['w'],axis=3)
    mm = sess(nodes, inits, [h.make_tensor_value_info('x',T.FLOAT,[1,None,C])])
    print(f'S={S}: two convs {bench(two,{"x":x}):.1f} us | one conv k3 {bench(one,{"x":x}):.1f} us | matmul {bench(mm,{"x":xt}):.1f} us')
