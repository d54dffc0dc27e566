// vol2col / col2vol for 5D blobs (N, C, L, H, W), the core of our Convolution3D and
// Deconvolution3D layers (C3D-v1.1 semantics). Written for this project.
//
// The column buffer has C*kd*kh*kw rows (channel-major, then kd, kh, kw, matching the
// weight blob (out, in, kd, kh, kw)) and Lo*Ho*Wo columns.
#ifndef CAFFE_V2V_VOL2COL_HPP_
#define CAFFE_V2V_VOL2COL_HPP_

namespace caffe {

struct Vol2ColGeometry {
  int channels;
  int length, height, width;             // the volume
  int kernel_d, kernel_h, kernel_w;
  int pad_d, pad_h, pad_w;
  int stride_d, stride_h, stride_w;
  int out_l, out_h, out_w;               // the columns (conv output size)
};

// col[(c,i,j,k), (l,h,w)] = vol[c, l*sd-pd+i, h*sh-ph+j, w*sw-pw+k] (0 outside).
template <typename Dtype>
void v2v_vol2col_cpu(const Dtype* vol, const Vol2ColGeometry& g, Dtype* col);

// The adjoint: vol = 0; vol[...] += col[...] over the same index map.
template <typename Dtype>
void v2v_col2vol_cpu(const Dtype* col, const Vol2ColGeometry& g, Dtype* vol);

#ifndef CPU_ONLY
template <typename Dtype>
void v2v_vol2col_gpu(const Dtype* vol, const Vol2ColGeometry& g, Dtype* col);

template <typename Dtype>
void v2v_col2vol_gpu(const Dtype* col, const Vol2ColGeometry& g, Dtype* vol);
#endif

}  // namespace caffe

#endif  // CAFFE_V2V_VOL2COL_HPP_
