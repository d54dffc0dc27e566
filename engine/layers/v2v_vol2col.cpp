// CPU vol2col / col2vol (see v2v_vol2col.hpp). Written for this project.
#include <algorithm>
#include <cstring>

#include "caffe/layers/v2v_vol2col.hpp"

namespace caffe {

namespace {

// For kernel offset k along an axis, the output positions o in [lo, hi) read an input
// index o*stride - pad + k inside [0, size).
inline void valid_range(int size, int out, int k, int pad, int stride, int* lo, int* hi) {
  int a = 0;
  while (a < out && a * stride - pad + k < 0) ++a;
  int b = out;
  while (b > a && (b - 1) * stride - pad + k >= size) --b;
  *lo = a;
  *hi = b;
}

}  // namespace

template <typename Dtype>
void v2v_vol2col_cpu(const Dtype* vol, const Vol2ColGeometry& g, Dtype* col) {
  const int out_hw = g.out_h * g.out_w;
  const int out_size = g.out_l * out_hw;
  const int vol_hw = g.height * g.width;
  int row = 0;
  for (int c = 0; c < g.channels; ++c) {
    const Dtype* vc = vol + static_cast<long>(c) * g.length * vol_hw;
    for (int i = 0; i < g.kernel_d; ++i) {
      for (int j = 0; j < g.kernel_h; ++j) {
        int h_lo, h_hi;
        valid_range(g.height, g.out_h, j, g.pad_h, g.stride_h, &h_lo, &h_hi);
        for (int k = 0; k < g.kernel_w; ++k, ++row) {
          int w_lo, w_hi;
          valid_range(g.width, g.out_w, k, g.pad_w, g.stride_w, &w_lo, &w_hi);
          Dtype* dst = col + static_cast<long>(row) * out_size;
          for (int l = 0; l < g.out_l; ++l) {
            const int il = l * g.stride_d - g.pad_d + i;
            Dtype* dl = dst + static_cast<long>(l) * out_hw;
            if (il < 0 || il >= g.length) {
              std::memset(dl, 0, sizeof(Dtype) * out_hw);
              continue;
            }
            for (int h = 0; h < g.out_h; ++h) {
              Dtype* d = dl + h * g.out_w;
              if (h < h_lo || h >= h_hi) {
                std::memset(d, 0, sizeof(Dtype) * g.out_w);
                continue;
              }
              const int ih = h * g.stride_h - g.pad_h + j;
              const Dtype* src = vc + static_cast<long>(il) * vol_hw + ih * g.width;
              for (int w = 0; w < w_lo; ++w) d[w] = 0;
              if (g.stride_w == 1) {
                if (w_hi > w_lo)
                  std::memcpy(d + w_lo, src + (w_lo - g.pad_w + k),
                              sizeof(Dtype) * (w_hi - w_lo));
              } else {
                for (int w = w_lo; w < w_hi; ++w) d[w] = src[w * g.stride_w - g.pad_w + k];
              }
              for (int w = std::max(w_hi, w_lo); w < g.out_w; ++w) d[w] = 0;
            }
          }
        }
      }
    }
  }
}

template <typename Dtype>
void v2v_col2vol_cpu(const Dtype* col, const Vol2ColGeometry& g, Dtype* vol) {
  const int out_hw = g.out_h * g.out_w;
  const int out_size = g.out_l * out_hw;
  const int vol_hw = g.height * g.width;
  std::memset(vol, 0, sizeof(Dtype) * static_cast<long>(g.channels) * g.length * vol_hw);
  int row = 0;
  for (int c = 0; c < g.channels; ++c) {
    Dtype* vc = vol + static_cast<long>(c) * g.length * vol_hw;
    for (int i = 0; i < g.kernel_d; ++i) {
      for (int j = 0; j < g.kernel_h; ++j) {
        int h_lo, h_hi;
        valid_range(g.height, g.out_h, j, g.pad_h, g.stride_h, &h_lo, &h_hi);
        for (int k = 0; k < g.kernel_w; ++k, ++row) {
          int w_lo, w_hi;
          valid_range(g.width, g.out_w, k, g.pad_w, g.stride_w, &w_lo, &w_hi);
          const Dtype* src = col + static_cast<long>(row) * out_size;
          for (int l = 0; l < g.out_l; ++l) {
            const int il = l * g.stride_d - g.pad_d + i;
            if (il < 0 || il >= g.length) continue;
            const Dtype* sl = src + static_cast<long>(l) * out_hw;
            for (int h = h_lo; h < h_hi; ++h) {
              const int ih = h * g.stride_h - g.pad_h + j;
              Dtype* d = vc + static_cast<long>(il) * vol_hw + ih * g.width;
              const Dtype* s = sl + h * g.out_w;
              for (int w = w_lo; w < w_hi; ++w) d[w * g.stride_w - g.pad_w + k] += s[w];
            }
          }
        }
      }
    }
  }
}

template void v2v_vol2col_cpu<float>(const float*, const Vol2ColGeometry&, float*);
template void v2v_vol2col_cpu<double>(const double*, const Vol2ColGeometry&, double*);
template void v2v_col2vol_cpu<float>(const float*, const Vol2ColGeometry&, float*);
template void v2v_col2vol_cpu<double>(const double*, const Vol2ColGeometry&, double*);

}  // namespace caffe
