#!/usr/bin/env bash
# One H200 session: vLLM 0.26 + the base model arrive as parts in /tmp/parts/1..N (one `run` per part,
# see README "GPU"); this script assembles them, then:
#   setup           unpack, install the wheels into /tmp/site, register the project's vLLM plugin
#                   (an entry point in /tmp/site: the project itself is on PYTHONPATH, not pip-installed)
#   train           rank study: LoRA ranks 1, 2, 16 on healthcare and manufacturing (same data and
#                   hyperparameters as the shipped rank-8 adapters), in parallel; adapters tarred into $OUT
#   bench-start     bench/gpu_lora.py in the background (setsid: it outlives this call while the machine is warm)
#   kernels-bench-start  bench/lora_kernels.py --tune, then bench/gpu_lora.py with its tuned configs, in the background
#   expand-grid     bench/lora_expand_grid.py (the project's segmented LoRA expand vs vLLM's grid), JSON to $OUT
#   segmented       bench/lora_segmented.py (the segmented shrink + expand vs vLLM's own kernels), JSON to $OUT
#   wait S          print the bench log for up to S seconds; copy results and stack dumps to $OUT
#   train-mixes     no vLLM: parts hold model/, data/<domain>.jsonl.gz (`assistant train D --export-data`, the
#                   verticals' mixes) and bnb/ (bitsandbytes, CUDA 13 libraries only); trains healthcare, retail,
#                   finance and legal on their mixes plus healthcare once with --qlora, in parallel, in the background;
#                   then `wait S` waits up to S seconds for them and tars the adapters (bf16) and logs into $OUT
set -uo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
export ASSISTANT_HOME=/tmp/ah ASSISTANT_BASE_MODEL=/tmp/gb/model
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"

for step in "$@"; do
  case "$step" in
    setup)
      t=$SECONDS
      mkdir -p /tmp/gb/wheels && cat $(ls /tmp/parts/* | sort -t/ -k4 -n) | tar xf - -C /tmp/gb || exit 1
      # ../shared/gpu/make-vllm-parts.sh packs the wheels at the top of the tar; older bundles had wheels/ + model/
      ls /tmp/gb/*.whl > /dev/null 2>&1 && mv /tmp/gb/*.whl /tmp/gb/wheels/
      python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/gb/wheels/*.whl || exit 1
      plugin=/tmp/site/domain_assistant_plugin-0.dist-info
      mkdir -p $plugin
      printf 'Metadata-Version: 2.1\nName: domain-assistant-plugin\nVersion: 0\n' > $plugin/METADATA
      printf '[vllm.general_plugins]\nassistant_lora_fix = assistant.serving.vllm_plugin:register\n' > $plugin/entry_points.txt
      python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())"
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
      echo "setup took $((SECONDS - t)) s" ;;
    train)
      t=$SECONDS
      mkdir -p /tmp/rank
      for d in healthcare manufacturing; do
        for r in 1 2 16; do
          python3 -m assistant train "$d" --data "/tmp/gb/data/$d.jsonl" --rank "$r" --epochs 3 \
            --out "/tmp/rank/$d-r$r" > "/tmp/rank/$d-r$r.log" 2>&1 &
        done
      done
      wait
      tail -n 12 /tmp/rank/*.log
      (cd /tmp/rank && tar cf - */adapter_model.safetensors */adapter_config.json */manifest.json | split -b 15M -d -a 1 - "$OUT/rank.tar.")
      echo "training took $((SECONDS - t)) s" ;;
    train-mixes)
      mkdir -p /tmp/gb /tmp/mixes
      [ -d /tmp/gb/model ] || cat $(ls /tmp/parts/* | sort -t/ -k4 -n) | tar xf - -C /tmp/gb || exit 1
      export PYTHONPATH=/tmp/gb/bnb:$PYTHONPATH
      python3 -c "import bitsandbytes, torch; print('bitsandbytes', bitsandbytes.__version__, torch.cuda.get_device_name())"
      for d in healthcare retail finance legal; do gunzip -kf "/tmp/gb/data/$d.jsonl.gz"; done
      run() { setsid nohup python3 -m assistant train "$@" > "/tmp/mixes/$RUN.log" 2>&1 < /dev/null & }
      for d in healthcare retail finance legal; do
        epochs=2; [ "$d" = healthcare ] && epochs=3
        RUN=$d run "$d" --data "/tmp/gb/data/$d.jsonl" --epochs $epochs --out "/tmp/mixes/$d"
      done
      RUN=healthcare-qlora run healthcare --data /tmp/gb/data/healthcare.jsonl --epochs 3 --qlora \
        --out /tmp/mixes/healthcare-qlora
      sleep 60; tail -n 3 /tmp/mixes/*.log; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv ;;
    bench-start)
      mkdir -p /tmp/bench
      setsid nohup python3 -m bench.gpu_lora --out /tmp/bench ${BENCH_ARGS:-} > /tmp/bench/log 2>&1 < /dev/null &
      echo "bench started: pid $!" ;;
    kernels-bench-start)
      mkdir -p /tmp/bench
      setsid nohup bash -c "python3 -m bench.lora_kernels --out /tmp/bench/kernels --tune ${KERNEL_ARGS:-} > /tmp/bench/kernels.log 2>&1;
        python3 -m bench.gpu_lora --out /tmp/bench --tuned-configs /tmp/bench/kernels/tuned_configs ${BENCH_ARGS:-} > /tmp/bench/log 2>&1" \
        < /dev/null > /dev/null 2>&1 &
      echo "kernels + bench started: pid $!" ;;
    segmented)
      python3 -m bench.lora_segmented --out "$OUT" 2>&1 | grep -v Warning ;;
    expand-grid)
      python3 -m bench.lora_expand_grid --out "$OUT" 2>&1 | grep -v Warning ;;
    wait)
      : ;;
    [0-9]*)
      end=$((SECONDS + step))
      if [ -d /tmp/mixes ]; then
        while [ $SECONDS -lt $end ] && pgrep -f "assistant train" > /dev/null; do sleep 10; done
        tail -n 4 /tmp/mixes/*.log
        (cd /tmp/mixes && tar cf - */adapter_model.safetensors */adapter_config.json */manifest.json \
          | split -b 15M -d -a 1 - "$OUT/mixes.tar.")
        cp /tmp/mixes/*.log "$OUT/" 2>/dev/null
        continue
      fi
      while [ $SECONDS -lt $end ]; do
        if grep -q "^wrote /tmp/bench/gpu_lora.json" /tmp/bench/log 2>/dev/null; then break; fi
        if ! pgrep -f "bench.gpu_lora|bench.lora_kernels" > /dev/null; then echo "bench process is gone"; break; fi
        sleep 10
      done
      [ -f /tmp/bench/kernels/lora_kernels.log ] && tail -n 25 /tmp/bench/kernels/lora_kernels.log
      grep -v -E "Warning|warn\(|^\s*$|^ +[a-zA-Z_:]+ +[0-9.]+%|^-+ +-+" /tmp/bench/log 2>/dev/null | tail -n 40
      [ -d /tmp/bench/kernels ] && tar czf "$OUT/kernels.tgz" -C /tmp/bench kernels kernels.log 2>/dev/null
      cp /tmp/bench/gpu_lora.json "$OUT/" 2>/dev/null
      cp /tmp/bench/log "$OUT/bench.log" 2>/dev/null
      ls /tmp/bench/pyspy-* 2>/dev/null && tar czf "$OUT/pyspy.tgz" -C /tmp/bench $(cd /tmp/bench && ls pyspy-*) ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
