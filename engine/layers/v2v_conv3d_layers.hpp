// Convolution3D, Deconvolution3D and Pooling3D: C3D-v1.1's layer types, parameters and
// blob shapes, implemented for this project (vol2col + GEMM; CUDA kernels in the .cu).
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

namespace caffe {

// Shared parameters, blobs and buffers of Convolution3D and Deconvolution3D.
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

  int num_output_, channels_, group_;
  int kernel_d_, kernel_s_, stride_d_, stride_s_, pad_d_, pad_s_;
  bool bias_term_;
  int in_l_, in_h_, in_w_, out_l_, out_h_, out_w_;
  // The col buffer always has the "big" volume's kernel rows and the "small" volume's
  // positions: conv: rows channels*k, cols = output; deconv: rows num_output*k, cols = input.
  Vol2ColGeometry geom_;
  int kernel_dim_;     // per group: rows of the col buffer / group
  int col_cols_;       // columns of the col buffer
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
};

template <typename Dtype>
class Deconvolution3DLayer : public Base3DConvLayer<Dtype> {
 public:
  explicit Deconvolution3DLayer(const LayerParameter& param)
      : Base3DConvLayer<Dtype>(param) {}
  virtual inline const char* type() const { return "Deconvolution3D"; }

 protected:
  virtual bool is_deconv() const { return true; }
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
