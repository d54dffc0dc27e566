// CUDA kernels of vol2col / col2vol (Convolution3D / Deconvolution3D run their GEMM logic,
// written once in the .cpp, over them) and of Pooling3D. Written for this project; built
// by `make setup-cuda` (engine/setup.sh --cuda).
#include <algorithm>
#include <cfloat>
#include <vector>

#include "caffe/layers/v2v_conv3d_layers.hpp"
#include "caffe/layers/v2v_vol2col.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

// One thread per (c, l, h, w) of the columns; it writes the kernel_d*kh*kw rows.
template <typename Dtype>
__global__ void v2v_vol2col_kernel(const int n, const Dtype* vol, const Vol2ColGeometry g,
                                   Dtype* col) {
  const int out_size = g.out_l * g.out_h * g.out_w;
  const int kvol = g.kernel_d * g.kernel_h * g.kernel_w;
  CUDA_KERNEL_LOOP(index, n) {
    int w = index % g.out_w;
    int t = index / g.out_w;
    int h = t % g.out_h;
    t /= g.out_h;
    int l = t % g.out_l;
    int c = t / g.out_l;
    const int l0 = l * g.stride_d - g.pad_d;
    const int h0 = h * g.stride_h - g.pad_h;
    const int w0 = w * g.stride_w - g.pad_w;
    const Dtype* v = vol + static_cast<long>(c) * g.length * g.height * g.width;
    Dtype* dst = col + static_cast<long>(c) * kvol * out_size + (l * g.out_h + h) * g.out_w + w;
    for (int i = 0; i < g.kernel_d; ++i) {
      const int il = l0 + i;
      for (int j = 0; j < g.kernel_h; ++j) {
        const int ih = h0 + j;
        for (int k = 0; k < g.kernel_w; ++k) {
          const int iw = w0 + k;
          *dst = (il >= 0 && il < g.length && ih >= 0 && ih < g.height && iw >= 0 &&
                  iw < g.width)
                     ? v[(static_cast<long>(il) * g.height + ih) * g.width + iw]
                     : Dtype(0);
          dst += out_size;
        }
      }
    }
  }
}

// One thread per volume element: it sums every column entry that maps onto it.
template <typename Dtype>
__global__ void v2v_col2vol_kernel(const int n, const Dtype* col, const Vol2ColGeometry g,
                                   Dtype* vol) {
  const int out_size = g.out_l * g.out_h * g.out_w;
  CUDA_KERNEL_LOOP(index, n) {
    int w = index % g.width;
    int t = index / g.width;
    int h = t % g.height;
    t /= g.height;
    int l = t % g.length;
    int c = t / g.length;
    Dtype val = 0;
    for (int i = 0; i < g.kernel_d; ++i) {
      int ol = l + g.pad_d - i;
      if (ol < 0 || ol % g.stride_d) continue;
      ol /= g.stride_d;
      if (ol >= g.out_l) continue;
      for (int j = 0; j < g.kernel_h; ++j) {
        int oh = h + g.pad_h - j;
        if (oh < 0 || oh % g.stride_h) continue;
        oh /= g.stride_h;
        if (oh >= g.out_h) continue;
        for (int k = 0; k < g.kernel_w; ++k) {
          int ow = w + g.pad_w - k;
          if (ow < 0 || ow % g.stride_w) continue;
          ow /= g.stride_w;
          if (ow >= g.out_w) continue;
          const long row = ((static_cast<long>(c) * g.kernel_d + i) * g.kernel_h + j) *
                               g.kernel_w + k;
          val += col[row * out_size + (ol * g.out_h + oh) * g.out_w + ow];
        }
      }
    }
    vol[index] = val;
  }
}

template <typename Dtype>
void v2v_vol2col_gpu(const Dtype* vol, const Vol2ColGeometry& g, Dtype* col) {
  const int n = g.channels * g.out_l * g.out_h * g.out_w;
  v2v_vol2col_kernel<Dtype><<<CAFFE_GET_BLOCKS(n), CAFFE_CUDA_NUM_THREADS>>>(n, vol, g, col);
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void v2v_col2vol_gpu(const Dtype* col, const Vol2ColGeometry& g, Dtype* vol) {
  const int n = g.channels * g.length * g.height * g.width;
  v2v_col2vol_kernel<Dtype><<<CAFFE_GET_BLOCKS(n), CAFFE_CUDA_NUM_THREADS>>>(n, col, g, vol);
  CUDA_POST_KERNEL_CHECK;
}

template void v2v_vol2col_gpu<float>(const float*, const Vol2ColGeometry&, float*);
template void v2v_vol2col_gpu<double>(const double*, const Vol2ColGeometry&, double*);
template void v2v_col2vol_gpu<float>(const float*, const Vol2ColGeometry&, float*);
template void v2v_col2vol_gpu<double>(const double*, const Vol2ColGeometry&, double*);

// ---------------------------------------------------------------- Pooling3D
struct Pool3DGeometry {
  int length, height, width, pooled_l, pooled_h, pooled_w;
  int kernel_d, kernel_s, stride_d, stride_s, pad_d, pad_s;
};

template <typename Dtype>
__global__ void v2v_pool3d_forward(const int n, const Dtype* x, const Pool3DGeometry g,
                                   const bool is_max, Dtype* y, int* mask) {
  CUDA_KERNEL_LOOP(index, n) {
    int pw = index % g.pooled_w;
    int t = index / g.pooled_w;
    int ph = t % g.pooled_h;
    t /= g.pooled_h;
    int pl = t % g.pooled_l;
    int nc = t / g.pooled_l;
    int l0 = pl * g.stride_d - g.pad_d, h0 = ph * g.stride_s - g.pad_s;
    int w0 = pw * g.stride_s - g.pad_s;
    int l1 = min(l0 + g.kernel_d, g.length + g.pad_d);
    int h1 = min(h0 + g.kernel_s, g.height + g.pad_s);
    int w1 = min(w0 + g.kernel_s, g.width + g.pad_s);
    const int pool_size = (l1 - l0) * (h1 - h0) * (w1 - w0);
    l0 = max(l0, 0); h0 = max(h0, 0); w0 = max(w0, 0);
    l1 = min(l1, g.length); h1 = min(h1, g.height); w1 = min(w1, g.width);
    const Dtype* xc = x + static_cast<long>(nc) * g.length * g.height * g.width;
    if (is_max) {
      Dtype best = -FLT_MAX;
      int arg = -1;
      for (int l = l0; l < l1; ++l)
        for (int h = h0; h < h1; ++h)
          for (int w = w0; w < w1; ++w) {
            const int i = (l * g.height + h) * g.width + w;
            if (xc[i] > best || arg < 0) { best = xc[i]; arg = i; }
          }
      y[index] = best;
      mask[index] = arg;
    } else {
      Dtype sum = 0;
      for (int l = l0; l < l1; ++l)
        for (int h = h0; h < h1; ++h)
          for (int w = w0; w < w1; ++w) sum += xc[(l * g.height + h) * g.width + w];
      y[index] = sum / pool_size;
    }
  }
}

// One thread per input element: gathers from every window that covers it.
template <typename Dtype>
__global__ void v2v_pool3d_backward(const int n, const Dtype* dy, const int* mask,
                                    const Pool3DGeometry g, const bool is_max, Dtype* dx) {
  CUDA_KERNEL_LOOP(index, n) {
    int w = index % g.width;
    int t = index / g.width;
    int h = t % g.height;
    t /= g.height;
    int l = t % g.length;
    int nc = t / g.length;
    const int in_idx = (l * g.height + h) * g.width + w;
    const int lp = l + g.pad_d, hp = h + g.pad_s, wp = w + g.pad_s;
    const int pl0 = (lp < g.kernel_d) ? 0 : (lp - g.kernel_d) / g.stride_d + 1;
    const int pl1 = min(lp / g.stride_d + 1, g.pooled_l);
    const int ph0 = (hp < g.kernel_s) ? 0 : (hp - g.kernel_s) / g.stride_s + 1;
    const int ph1 = min(hp / g.stride_s + 1, g.pooled_h);
    const int pw0 = (wp < g.kernel_s) ? 0 : (wp - g.kernel_s) / g.stride_s + 1;
    const int pw1 = min(wp / g.stride_s + 1, g.pooled_w);
    const long off = static_cast<long>(nc) * g.pooled_l * g.pooled_h * g.pooled_w;
    Dtype grad = 0;
    for (int pl = pl0; pl < pl1; ++pl)
      for (int ph = ph0; ph < ph1; ++ph)
        for (int pw = pw0; pw < pw1; ++pw) {
          const long o = off + (pl * g.pooled_h + ph) * g.pooled_w + pw;
          if (is_max) {
            if (mask[o] == in_idx) grad += dy[o];
          } else {
            int l0 = pl * g.stride_d - g.pad_d, h0 = ph * g.stride_s - g.pad_s;
            int w0 = pw * g.stride_s - g.pad_s;
            int l1 = min(l0 + g.kernel_d, g.length + g.pad_d);
            int h1 = min(h0 + g.kernel_s, g.height + g.pad_s);
            int w1 = min(w0 + g.kernel_s, g.width + g.pad_s);
            grad += dy[o] / ((l1 - l0) * (h1 - h0) * (w1 - w0));
          }
        }
    dx[index] = grad;
  }
}

template <typename Dtype>
void Pooling3DLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
                                        const vector<Blob<Dtype>*>& top) {
  Pool3DGeometry g = {length_, height_, width_, pooled_l_, pooled_h_, pooled_w_,
                      kernel_d_, kernel_s_, stride_d_, stride_s_, pad_d_, pad_s_};
  const int n = top[0]->count();
  v2v_pool3d_forward<Dtype><<<CAFFE_GET_BLOCKS(n), CAFFE_CUDA_NUM_THREADS>>>(
      n, bottom[0]->gpu_data(), g, is_max_, top[0]->mutable_gpu_data(),
      is_max_ ? max_idx_.mutable_gpu_data() : NULL);
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void Pooling3DLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
                                         const vector<bool>& propagate_down,
                                         const vector<Blob<Dtype>*>& bottom) {
  if (!propagate_down[0]) return;
  Pool3DGeometry g = {length_, height_, width_, pooled_l_, pooled_h_, pooled_w_,
                      kernel_d_, kernel_s_, stride_d_, stride_s_, pad_d_, pad_s_};
  const int n = bottom[0]->count();
  v2v_pool3d_backward<Dtype><<<CAFFE_GET_BLOCKS(n), CAFFE_CUDA_NUM_THREADS>>>(
      n, top[0]->gpu_diff(), is_max_ ? max_idx_.gpu_data() : NULL, g, is_max_,
      bottom[0]->mutable_gpu_diff());
  CUDA_POST_KERNEL_CHECK;
}

INSTANTIATE_LAYER_GPU_FUNCS(Pooling3DLayer);

}  // namespace caffe
