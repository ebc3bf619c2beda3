#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  size_t mb=atoi(argv[1]); size_t n=mb*1024*1024/8; uint64_t*a=malloc(n*8);
  for(size_t i=0;i<n;i++)a[i]=i*0x9e3779b97f4a7c15ULL;
  // independent random reads: sum of a[h(i)]
  size_t reads=20000000; uint64_t s=0,x=88172645463325252ULL; double t0=now();
  for(size_t i=0;i<reads;i++){x^=x<<13;x^=x>>7;x^=x<<17; s+=a[(x>>8)%n];}
  double t1=now();
  // with software prefetch 16 ahead
  uint64_t y=88172645463325252ULL, idx[64]; for(int j=0;j<64;j++){y^=y<<13;y^=y>>7;y^=y<<17; idx[j]=(y>>8)%n;}
  double t2=now();
  for(size_t i=0;i<reads;i++){ __builtin_prefetch(&a[idx[(i+32)&63]]); s+=a[idx[i&63]]; y^=y<<13;y^=y>>7;y^=y<<17; idx[(i+64)&63]=(y>>8)%n; }
  double t3=now();
  // dependent chase
  size_t*p=malloc(n*sizeof(size_t)); for(size_t i=0;i<n;i++)p[i]=i; for(size_t i=n-1;i>0;i--){x^=x<<13;x^=x>>7;x^=x<<17;size_t j=(x>>8)%(i+1);size_t t=p[i];p[i]=p[j];p[j]=t;}
  size_t c=0; double t4=now(); for(size_t i=0;i<5000000;i++)c=p[c]; double t5=now();
  printf("%zu MB: independent %.1f ns/read (%.1f M lines/s), prefetched %.1f ns/read, dependent %.1f ns %lu %zu\n",mb,(t1-t0)/reads*1e9,reads/(t1-t0)/1e6,(t3-t2)/reads*1e9,(t5-t4)/5e6*1e9,s,c);
}
