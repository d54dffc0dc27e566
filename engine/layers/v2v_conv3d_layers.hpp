// Convolution3D, Deconvolution3D and Pooling3D: C3D-v1.1's layer types, parameters and
// blob shapes, implemented for this project: vol2col + GEMM, written once for CPU and
// GPU as BVLC's base_conv_layer does (the .cu holds only the CUDA kernels).
//
// Blobs: 5D (N, C, L, H, W). Convolution3D weight (out, in/group, kd, k, k),
// Deconvolution3D weight (in, out/group, kd, k, k), bias (1, 1, 1, 1, out).
// Output sizes per axis (temporal axis: kernel_depth / temporal_stride / temporal_pad):
//   Convolution3D    floor((in + 2*pad - k) / stride) + 1
//   Deconvolution3D  (in - 1) * stride - 2*pad + k
//   Pooling3D        ceil((in + 2*pad - k) / stride) + 1, minus one if the last window
//                    would start at or past in + pad (Caffe's ceil-mode rule).
#ifndef CAFFE_V2V_CONV3D_LAYERS_HPP_
#define CAFFE_V2V_CONV3D_LAYERS_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"
#include "caffe/layers/v2v_vol2col.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

// The device a layer runs on, as BVLC's base_conv_layer sees it: blob memory, GEMM/GEMV
// and the column kernels. The GEMM logic of Convolution3D / Deconvolution3D is written once
// over these (Base3DConvLayer::forward / backward); CPU and GPU differ only in the kernels.
// V2VCpu and V2VGpu are one definition: their calls differ only in "cpu" / "gpu".
#define V2V_DEVICE(Name, dev) \
template <typename Dtype> \
struct Name { \
  static const Dtype* data(const Blob<Dtype>& b) { return b.dev##_data(); } \
  static const Dtype* diff(const Blob<Dtype>& b) { return b.dev##_diff(); } \
  static Dtype* mutable_data(Blob<Dtype>* b) { return b->mutable_##dev##_data(); } \
  static Dtype* mutable_diff(Blob<Dtype>* b) { return b->mutable_##dev##_diff(); } \
  static void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, \
                   Dtype alpha, const Dtype* a, const Dtype* b, Dtype beta, Dtype* c) { \
    caffe_##dev##_gemm<Dtype>(ta, tb, m, n, k, alpha, a, b, beta, c); \
  } \
  static void gemv(CBLAS_TRANSPOSE ta, int m, int n, Dtype alpha, const Dtype* a, \
                   const Dtype* x, Dtype beta, Dtype* y) { \
    caffe_##dev##_gemv<Dtype>(ta, m, n, alpha, a, x, beta, y); \
  } \
  static void vol2col(const Dtype* vol, const Vol2ColGeometry& g, Dtype* col) { \
    v2v_vol2col_##dev(vol, g, col); \
  } \
  static void col2vol(const Dtype* col, const Vol2ColGeometry& g, Dtype* vol) { \
    v2v_col2vol_##dev(col, g, vol); \
  } \
};

V2V_DEVICE(V2VCpu, cpu)
#ifndef CPU_ONLY
V2V_DEVICE(V2VGpu, gpu)
#endif
#undef V2V_DEVICE

// Convolution3D and Deconvolution3D: parameters, blobs, buffers and the GEMM logic.
// Deconvolution is the adjoint of convolution with the roles of the volumes swapped: the
// "big" volume (conv input, deconv output) is the one vol2col reads, the "small" one (conv
// output, deconv input) is what the GEMMs produce from the columns.
template <typename Dtype>
class Base3DConvLayer : public Layer<Dtype> {
 public:
  explicit Base3DConvLayer(const LayerParameter& param) : Layer<Dtype>(param) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
                          const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
                       const vector<Blob<Dtype>*>& top);
  virtual inline int ExactNumBottomBlobs() const { return 1; }
  virtual inline int ExactNumTopBlobs() const { return 1; }

 protected:
  virtual bool is_deconv() const = 0;
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
                           const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
                           const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
                            const vector<bool>& propagate_down,
                            const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
                            const vector<bool>& propagate_down,
                            const vector<Blob<Dtype>*>& bottom);
  // The whole batch, on device D (V2VCpu or V2VGpu).
  template <class D> void forward(const vector<Blob<Dtype>*>& bottom,
                                  const vector<Blob<Dtype>*>& top);
  template <class D> void backward(const vector<Blob<Dtype>*>& top,
                                   const vector<bool>& propagate_down,
                                   const vector<Blob<Dtype>*>& bottom);
  // One image. small = W * vol2col(big); big = col2vol(W^T * small);
  // dW += small * vol2col(big)^T (skip_vol2col: the columns of big are already there).
  template <class D> void forward_gemm(const Dtype* big, const Dtype* weights, Dtype* small,
                                       bool skip_vol2col);
  template <class D> void backward_gemm(const Dtype* small, const Dtype* weights, Dtype* big);
  template <class D> void weight_gemm(const Dtype* big, const Dtype* small, Dtype* dweights);
  template <class D> void forward_bias(Dtype* out, const Dtype* bias);
  template <class D> void backward_bias(Dtype* dbias, const Dtype* dout);

  int num_output_, channels_, group_;
  int kernel_d_, kernel_s_, stride_d_, stride_s_, pad_d_, pad_s_;
  bool bias_term_;
  int in_l_, in_h_, in_w_, out_l_, out_h_, out_w_;
  // The col buffer always has the "big" volume's kernel rows and the "small" volume's
  // positions: conv: rows channels*k, cols = output; deconv: rows num_output*k, cols = input.
  Vol2ColGeometry geom_;
  int kernel_dim_;     // per group: rows of the col buffer / group
  int col_cols_;       // columns of the col buffer
  int small_channels_;  // per group: channels of the small volume
  int out_dim_;        // spatial size of the top blob (what the bias is added over)
  Blob<Dtype> col_buffer_;
  Blob<Dtype> bias_multiplier_;
};

template <typename Dtype>
class Convolution3DLayer : public Base3DConvLayer<Dtype> {
 public:
  explicit Convolution3DLayer(const LayerParameter& param)
      : Base3DConvLayer<Dtype>(param) {}
  virtual inline const char* type() const { return "Convolution3D"; }

 protected:
  virtual bool is_deconv() const { return false; }
};

template <typename Dtype>
class Deconvolution3DLayer : public Base3DConvLayer<Dtype> {
 public:
  explicit Deconvolution3DLayer(const LayerParameter& param)
      : Base3DConvLayer<Dtype>(param) {}
  virtual inline const char* type() const { return "Deconvolution3D"; }

 protected:
  virtual bool is_deconv() const { return true; }
};

template <typename Dtype>
class Pooling3DLayer : public Layer<Dtype> {
 public:
  explicit Pooling3DLayer(const LayerParameter& param) : Layer<Dtype>(param) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
                          const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
                       const vector<Blob<Dtype>*>& top);
  virtual inline const char* type() const { return "Pooling3D"; }
  virtual inline int ExactNumBottomBlobs() const { return 1; }
  virtual inline int ExactNumTopBlobs() const { return 1; }

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
                           const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
                           const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
                            const vector<bool>& propagate_down,
                            const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
                            const vector<bool>& propagate_down,
                            const vector<Blob<Dtype>*>& bottom);

  bool is_max_;
  int kernel_d_, kernel_s_, stride_d_, stride_s_, pad_d_, pad_s_;
  int num_, channels_, length_, height_, width_;
  int pooled_l_, pooled_h_, pooled_w_;
  Blob<int> max_idx_;  // argmax (index within the channel volume), MAX only
};

}  // namespace caffe

#endif  // CAFFE_V2V_CONV3D_LAYERS_HPP_
