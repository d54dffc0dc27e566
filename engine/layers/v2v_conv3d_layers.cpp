// CPU code and set-up of Convolution3D / Deconvolution3D / Pooling3D (see the header).
// Written for this project.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <vector>

#include "caffe/filler.hpp"
#include "caffe/layers/v2v_conv3d_layers.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

// ---------------------------------------------------------------- Base3DConvLayer
template <typename Dtype>
void Base3DConvLayer<Dtype>::LayerSetUp(const vector<Blob<Dtype>*>& bottom,
                                        const vector<Blob<Dtype>*>& top) {
  CHECK(this->layer_param_.has_convolution3d_param())
      << this->type() << " layer " << this->layer_param_.name()
      << " needs convolution3d_param";
  const Convolution3DParameter& p = this->layer_param_.convolution3d_param();
  CHECK_EQ(bottom[0]->num_axes(), 5) << this->type() << " needs a 5D (N,C,L,H,W) input";
  CHECK(p.has_kernel_size() && p.kernel_size() > 0) << "kernel_size must be > 0";
  CHECK(p.has_kernel_depth() && p.kernel_depth() > 0) << "kernel_depth must be > 0";
  CHECK_GT(p.num_output(), 0) << "num_output must be > 0";
  CHECK_GT(p.stride(), 0);
  CHECK_GT(p.temporal_stride(), 0);
  CHECK_EQ(p.filter_group(), 1) << "filter_group != 1 is not supported";
  num_output_ = p.num_output();
  group_ = p.group();
  kernel_d_ = p.kernel_depth();
  kernel_s_ = p.kernel_size();
  stride_d_ = p.temporal_stride();
  stride_s_ = p.stride();
  pad_d_ = p.temporal_pad();
  pad_s_ = p.pad();
  bias_term_ = p.bias_term();
  channels_ = bottom[0]->shape(1);
  CHECK_EQ(channels_ % group_, 0) << "input channels must be divisible by group";
  CHECK_EQ(num_output_ % group_, 0) << "num_output must be divisible by group";

  vector<int> wshape(5);
  if (is_deconv()) {
    wshape[0] = channels_;
    wshape[1] = num_output_ / group_;
  } else {
    wshape[0] = num_output_;
    wshape[1] = channels_ / group_;
  }
  wshape[2] = kernel_d_;
  wshape[3] = kernel_s_;
  wshape[4] = kernel_s_;
  vector<int> bshape(5, 1);
  bshape[4] = num_output_;

  if (this->blobs_.size() > 0) {
    CHECK_EQ(this->blobs_.size(), bias_term_ ? 2 : 1) << "wrong number of parameter blobs";
    CHECK(this->blobs_[0]->shape() == wshape)
        << "weight shape " << this->blobs_[0]->shape_string() << " does not match the layer";
    LOG(INFO) << "Skipping parameter initialization";
  } else {
    this->blobs_.resize(bias_term_ ? 2 : 1);
    this->blobs_[0].reset(new Blob<Dtype>(wshape));
    shared_ptr<Filler<Dtype> > wf(GetFiller<Dtype>(p.weight_filler()));
    wf->Fill(this->blobs_[0].get());
    if (bias_term_) {
      this->blobs_[1].reset(new Blob<Dtype>(bshape));
      shared_ptr<Filler<Dtype> > bf(GetFiller<Dtype>(p.bias_filler()));
      bf->Fill(this->blobs_[1].get());
    }
  }
  this->param_propagate_down_.resize(this->blobs_.size(), true);
}

template <typename Dtype>
void Base3DConvLayer<Dtype>::Reshape(const vector<Blob<Dtype>*>& bottom,
                                     const vector<Blob<Dtype>*>& top) {
  CHECK_EQ(bottom[0]->num_axes(), 5) << this->type() << " needs a 5D (N,C,L,H,W) input";
  CHECK_EQ(bottom[0]->shape(1), channels_) << "input channels changed after set-up";
  in_l_ = bottom[0]->shape(2);
  in_h_ = bottom[0]->shape(3);
  in_w_ = bottom[0]->shape(4);
  if (is_deconv()) {
    out_l_ = (in_l_ - 1) * stride_d_ - 2 * pad_d_ + kernel_d_;
    out_h_ = (in_h_ - 1) * stride_s_ - 2 * pad_s_ + kernel_s_;
    out_w_ = (in_w_ - 1) * stride_s_ - 2 * pad_s_ + kernel_s_;
  } else {
    out_l_ = (in_l_ + 2 * pad_d_ - kernel_d_) / stride_d_ + 1;
    out_h_ = (in_h_ + 2 * pad_s_ - kernel_s_) / stride_s_ + 1;
    out_w_ = (in_w_ + 2 * pad_s_ - kernel_s_) / stride_s_ + 1;
  }
  CHECK(out_l_ > 0 && out_h_ > 0 && out_w_ > 0)
      << this->type() << " layer " << this->layer_param_.name() << ": input "
      << bottom[0]->shape_string() << " is too small for its kernel";
  vector<int> tshape(5);
  tshape[0] = bottom[0]->shape(0);
  tshape[1] = num_output_;
  tshape[2] = out_l_;
  tshape[3] = out_h_;
  tshape[4] = out_w_;
  top[0]->Reshape(tshape);

  // The big volume (conv: input, deconv: output) is the one vol2col reads.
  Vol2ColGeometry& g = geom_;
  g.channels = is_deconv() ? num_output_ : channels_;
  g.length = is_deconv() ? out_l_ : in_l_;
  g.height = is_deconv() ? out_h_ : in_h_;
  g.width = is_deconv() ? out_w_ : in_w_;
  g.kernel_d = kernel_d_;
  g.kernel_h = g.kernel_w = kernel_s_;
  g.pad_d = pad_d_;
  g.pad_h = g.pad_w = pad_s_;
  g.stride_d = stride_d_;
  g.stride_h = g.stride_w = stride_s_;
  g.out_l = is_deconv() ? in_l_ : out_l_;
  g.out_h = is_deconv() ? in_h_ : out_h_;
  g.out_w = is_deconv() ? in_w_ : out_w_;
  kernel_dim_ = g.channels / group_ * kernel_d_ * kernel_s_ * kernel_s_;
  col_cols_ = g.out_l * g.out_h * g.out_w;
  small_channels_ = (is_deconv() ? channels_ : num_output_) / group_;
  out_dim_ = out_l_ * out_h_ * out_w_;
  vector<int> cshape(2);
  cshape[0] = kernel_dim_ * group_;
  cshape[1] = col_cols_;
  col_buffer_.Reshape(cshape);
  vector<int> mshape(1, out_dim_);
  if (bias_term_ && bias_multiplier_.shape() != mshape) {
    bias_multiplier_.Reshape(mshape);
    caffe_set(bias_multiplier_.count(), Dtype(1), bias_multiplier_.mutable_cpu_data());
  }
}

// ------------------------------------------- Base3DConvLayer: the GEMM logic, any device
template <typename Dtype> template <class D>
void Base3DConvLayer<Dtype>::forward_gemm(const Dtype* big, const Dtype* weights,
                                          Dtype* small, bool skip_vol2col) {
  Dtype* col = D::mutable_data(&col_buffer_);
  const int M = small_channels_, K = kernel_dim_, P = col_cols_;
  if (!skip_vol2col) D::vol2col(big, geom_, col);
  for (int g = 0; g < group_; ++g)
    D::gemm(CblasNoTrans, CblasNoTrans, M, P, K, Dtype(1), weights + g * M * K,
            col + static_cast<long>(g) * K * P, Dtype(0), small + static_cast<long>(g) * M * P);
}

template <typename Dtype> template <class D>
void Base3DConvLayer<Dtype>::backward_gemm(const Dtype* small, const Dtype* weights,
                                           Dtype* big) {
  Dtype* col = D::mutable_data(&col_buffer_);
  const int M = small_channels_, K = kernel_dim_, P = col_cols_;
  for (int g = 0; g < group_; ++g)
    D::gemm(CblasTrans, CblasNoTrans, K, P, M, Dtype(1), weights + g * M * K,
            small + static_cast<long>(g) * M * P, Dtype(0), col + static_cast<long>(g) * K * P);
  D::col2vol(col, geom_, big);
}

template <typename Dtype> template <class D>
void Base3DConvLayer<Dtype>::weight_gemm(const Dtype* big, const Dtype* small,
                                         Dtype* dweights) {
  Dtype* col = D::mutable_data(&col_buffer_);
  const int M = small_channels_, K = kernel_dim_, P = col_cols_;
  D::vol2col(big, geom_, col);
  for (int g = 0; g < group_; ++g)
    D::gemm(CblasNoTrans, CblasTrans, M, K, P, Dtype(1), small + static_cast<long>(g) * M * P,
            col + static_cast<long>(g) * K * P, Dtype(1), dweights + g * M * K);
}

template <typename Dtype> template <class D>
void Base3DConvLayer<Dtype>::forward_bias(Dtype* out, const Dtype* bias) {
  D::gemm(CblasNoTrans, CblasNoTrans, num_output_, out_dim_, 1, Dtype(1), bias,
          D::data(bias_multiplier_), Dtype(1), out);
}

template <typename Dtype> template <class D>
void Base3DConvLayer<Dtype>::backward_bias(Dtype* dbias, const Dtype* dout) {
  D::gemv(CblasNoTrans, num_output_, out_dim_, Dtype(1), dout, D::data(bias_multiplier_),
          Dtype(1), dbias);
}

template <typename Dtype> template <class D>
void Base3DConvLayer<Dtype>::forward(const vector<Blob<Dtype>*>& bottom,
                                     const vector<Blob<Dtype>*>& top) {
  const Dtype* w = D::data(*this->blobs_[0]);
  const long xdim = bottom[0]->count(1), ydim = top[0]->count(1);
  for (int n = 0; n < bottom[0]->shape(0); ++n) {
    const Dtype* x = D::data(*bottom[0]) + n * xdim;
    Dtype* y = D::mutable_data(top[0]) + n * ydim;
    if (is_deconv())
      backward_gemm<D>(x, w, y);
    else
      forward_gemm<D>(x, w, y, false);
    if (bias_term_) forward_bias<D>(y, D::data(*this->blobs_[1]));
  }
}

template <typename Dtype> template <class D>
void Base3DConvLayer<Dtype>::backward(const vector<Blob<Dtype>*>& top,
                                      const vector<bool>& propagate_down,
                                      const vector<Blob<Dtype>*>& bottom) {
  const int N = bottom[0]->shape(0);
  const long xdim = bottom[0]->count(1), ydim = top[0]->count(1);
  if (bias_term_ && this->param_propagate_down_[1]) {
    for (int n = 0; n < N; ++n)
      backward_bias<D>(D::mutable_diff(this->blobs_[1].get()), D::diff(*top[0]) + n * ydim);
  }
  const bool dw_needed = this->param_propagate_down_[0];
  if (!dw_needed && !propagate_down[0]) return;
  const Dtype* w = D::data(*this->blobs_[0]);
  for (int n = 0; n < N; ++n) {
    const Dtype* x = D::data(*bottom[0]) + n * xdim;
    const Dtype* dy = D::diff(*top[0]) + n * ydim;
    if (dw_needed)
      weight_gemm<D>(is_deconv() ? dy : x, is_deconv() ? x : dy,
                     D::mutable_diff(this->blobs_[0].get()));
    if (!propagate_down[0]) continue;
    Dtype* dx = D::mutable_diff(bottom[0]) + n * xdim;
    if (is_deconv())
      forward_gemm<D>(dy, w, dx, dw_needed);  // weight_gemm left vol2col(dy) in the buffer
    else
      backward_gemm<D>(dy, w, dx);
  }
}

template <typename Dtype>
void Base3DConvLayer<Dtype>::Forward_cpu(const vector<Blob<Dtype>*>& bottom,
                                         const vector<Blob<Dtype>*>& top) {
  forward<V2VCpu<Dtype> >(bottom, top);
}

template <typename Dtype>
void Base3DConvLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top,
                                          const vector<bool>& propagate_down,
                                          const vector<Blob<Dtype>*>& bottom) {
  backward<V2VCpu<Dtype> >(top, propagate_down, bottom);
}

#ifndef CPU_ONLY
template <typename Dtype>
void Base3DConvLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
                                         const vector<Blob<Dtype>*>& top) {
  forward<V2VGpu<Dtype> >(bottom, top);
}

template <typename Dtype>
void Base3DConvLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
                                          const vector<bool>& propagate_down,
                                          const vector<Blob<Dtype>*>& bottom) {
  backward<V2VGpu<Dtype> >(top, propagate_down, bottom);
}
#else
STUB_GPU(Base3DConvLayer);
#endif

// ---------------------------------------------------------------- Pooling3D
template <typename Dtype>
void Pooling3DLayer<Dtype>::LayerSetUp(const vector<Blob<Dtype>*>& bottom,
                                       const vector<Blob<Dtype>*>& top) {
  CHECK(this->layer_param_.has_pooling3d_param())
      << "Pooling3D layer " << this->layer_param_.name() << " needs pooling3d_param";
  const Pooling3DParameter& p = this->layer_param_.pooling3d_param();
  CHECK(p.pool() == Pooling3DParameter_PoolMethod_MAX ||
        p.pool() == Pooling3DParameter_PoolMethod_AVE)
      << "Pooling3D supports MAX and AVE only";
  is_max_ = p.pool() == Pooling3DParameter_PoolMethod_MAX;
  CHECK(p.has_kernel_size() && p.kernel_size() > 0) << "kernel_size must be > 0";
  CHECK(p.has_kernel_depth() && p.kernel_depth() > 0) << "kernel_depth must be > 0";
  kernel_d_ = p.kernel_depth();
  kernel_s_ = p.kernel_size();
  stride_d_ = p.temporal_stride();
  stride_s_ = p.stride();
  pad_d_ = p.temporal_pad();
  pad_s_ = p.pad();
  CHECK_GT(stride_d_, 0);
  CHECK_GT(stride_s_, 0);
  CHECK_LT(pad_d_, kernel_d_) << "temporal_pad must be smaller than kernel_depth";
  CHECK_LT(pad_s_, kernel_s_) << "pad must be smaller than kernel_size";
}

namespace {
inline int pooled_size(int in, int k, int s, int pad) {
  int out = static_cast<int>(std::ceil(static_cast<float>(in + 2 * pad - k) / s)) + 1;
  if ((out - 1) * s >= in + pad) --out;  // the last window must start inside in + pad
  return out;
}
}  // namespace

template <typename Dtype>
void Pooling3DLayer<Dtype>::Reshape(const vector<Blob<Dtype>*>& bottom,
                                    const vector<Blob<Dtype>*>& top) {
  CHECK_EQ(bottom[0]->num_axes(), 5) << "Pooling3D needs a 5D (N,C,L,H,W) input";
  num_ = bottom[0]->shape(0);
  channels_ = bottom[0]->shape(1);
  length_ = bottom[0]->shape(2);
  height_ = bottom[0]->shape(3);
  width_ = bottom[0]->shape(4);
  CHECK(length_ + 2 * pad_d_ >= kernel_d_ && height_ + 2 * pad_s_ >= kernel_s_ &&
        width_ + 2 * pad_s_ >= kernel_s_)
      << "Pooling3D layer " << this->layer_param_.name() << ": input "
      << bottom[0]->shape_string() << " is smaller than its kernel";
  pooled_l_ = pooled_size(length_, kernel_d_, stride_d_, pad_d_);
  pooled_h_ = pooled_size(height_, kernel_s_, stride_s_, pad_s_);
  pooled_w_ = pooled_size(width_, kernel_s_, stride_s_, pad_s_);
  vector<int> tshape(5);
  tshape[0] = num_;
  tshape[1] = channels_;
  tshape[2] = pooled_l_;
  tshape[3] = pooled_h_;
  tshape[4] = pooled_w_;
  top[0]->Reshape(tshape);
  if (is_max_) max_idx_.Reshape(tshape);
}

template <typename Dtype>
void Pooling3DLayer<Dtype>::Forward_cpu(const vector<Blob<Dtype>*>& bottom,
                                        const vector<Blob<Dtype>*>& top) {
  const Dtype* x = bottom[0]->cpu_data();
  Dtype* y = top[0]->mutable_cpu_data();
  int* mask = is_max_ ? max_idx_.mutable_cpu_data() : NULL;
  const int in_vol = length_ * height_ * width_;
  const int out_vol = pooled_l_ * pooled_h_ * pooled_w_;
  for (int nc = 0; nc < num_ * channels_; ++nc) {
    const Dtype* xc = x + static_cast<long>(nc) * in_vol;
    Dtype* yc = y + static_cast<long>(nc) * out_vol;
    int* mc = mask ? mask + static_cast<long>(nc) * out_vol : NULL;
    for (int pl = 0; pl < pooled_l_; ++pl) {
      int l0 = pl * stride_d_ - pad_d_;
      int l1 = std::min(l0 + kernel_d_, length_ + pad_d_);
      for (int ph = 0; ph < pooled_h_; ++ph) {
        int h0 = ph * stride_s_ - pad_s_;
        int h1 = std::min(h0 + kernel_s_, height_ + pad_s_);
        for (int pw = 0; pw < pooled_w_; ++pw) {
          int w0 = pw * stride_s_ - pad_s_;
          int w1 = std::min(w0 + kernel_s_, width_ + pad_s_);
          const int pool_size = (l1 - l0) * (h1 - h0) * (w1 - w0);
          const int la = std::max(l0, 0), lb = std::min(l1, length_);
          const int ha = std::max(h0, 0), hb = std::min(h1, height_);
          const int wa = std::max(w0, 0), wb = std::min(w1, width_);
          const int o = (pl * pooled_h_ + ph) * pooled_w_ + pw;
          if (is_max_) {
            Dtype best = -FLT_MAX;
            int arg = -1;
            for (int l = la; l < lb; ++l)
              for (int h = ha; h < hb; ++h)
                for (int w = wa; w < wb; ++w) {
                  const int i = (l * height_ + h) * width_ + w;
                  if (xc[i] > best || arg < 0) {
                    best = xc[i];
                    arg = i;
                  }
                }
            yc[o] = best;
            mc[o] = arg;
          } else {
            Dtype sum = 0;
            for (int l = la; l < lb; ++l)
              for (int h = ha; h < hb; ++h)
                for (int w = wa; w < wb; ++w) sum += xc[(l * height_ + h) * width_ + w];
            yc[o] = sum / pool_size;
          }
        }
      }
    }
  }
}

template <typename Dtype>
void Pooling3DLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top,
                                         const vector<bool>& propagate_down,
                                         const vector<Blob<Dtype>*>& bottom) {
  if (!propagate_down[0]) return;
  const Dtype* dy = top[0]->cpu_diff();
  Dtype* dx = bottom[0]->mutable_cpu_diff();
  caffe_set(bottom[0]->count(), Dtype(0), dx);
  const int* mask = is_max_ ? max_idx_.cpu_data() : NULL;
  const int in_vol = length_ * height_ * width_;
  const int out_vol = pooled_l_ * pooled_h_ * pooled_w_;
  for (int nc = 0; nc < num_ * channels_; ++nc) {
    Dtype* dxc = dx + static_cast<long>(nc) * in_vol;
    const Dtype* dyc = dy + static_cast<long>(nc) * out_vol;
    if (is_max_) {
      const int* mc = mask + static_cast<long>(nc) * out_vol;
      for (int o = 0; o < out_vol; ++o) dxc[mc[o]] += dyc[o];
      continue;
    }
    for (int pl = 0; pl < pooled_l_; ++pl) {
      int l0 = pl * stride_d_ - pad_d_;
      int l1 = std::min(l0 + kernel_d_, length_ + pad_d_);
      for (int ph = 0; ph < pooled_h_; ++ph) {
        int h0 = ph * stride_s_ - pad_s_;
        int h1 = std::min(h0 + kernel_s_, height_ + pad_s_);
        for (int pw = 0; pw < pooled_w_; ++pw) {
          int w0 = pw * stride_s_ - pad_s_;
          int w1 = std::min(w0 + kernel_s_, width_ + pad_s_);
          const int pool_size = (l1 - l0) * (h1 - h0) * (w1 - w0);
          const Dtype g = dyc[(pl * pooled_h_ + ph) * pooled_w_ + pw] / pool_size;
          for (int l = std::max(l0, 0); l < std::min(l1, length_); ++l)
            for (int h = std::max(h0, 0); h < std::min(h1, height_); ++h)
              for (int w = std::max(w0, 0); w < std::min(w1, width_); ++w)
                dxc[(l * height_ + h) * width_ + w] += g;
        }
      }
    }
  }
}

#ifdef CPU_ONLY
STUB_GPU(Pooling3DLayer);
#endif

INSTANTIATE_CLASS(Base3DConvLayer);
INSTANTIATE_CLASS(Convolution3DLayer);
INSTANTIATE_CLASS(Deconvolution3DLayer);
INSTANTIATE_CLASS(Pooling3DLayer);
REGISTER_LAYER_CLASS(Convolution3D);
REGISTER_LAYER_CLASS(Deconvolution3D);
REGISTER_LAYER_CLASS(Pooling3D);

}  // namespace caffe
