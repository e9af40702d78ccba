#!/usr/bin/env bash
# Regenerates the hostile-input corpus (tests/hostile/*.bin + MANIFEST) and the fuzz seeds
# (tests/fuzz/corpus/{batch,frame,config}/) from gen_corpus.c. Needs a C compiler and libzstd.
# Reproducers kept from fuzzing live in tests/fuzz/regress/ and are not touched.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${CC:-cc}" -std=c11 -O2 -Wall -Wextra -Werror -o "$tmp/gen_corpus" "$root/tests/fuzz/gen_corpus.c" -lzstd
rm -f "$root"/tests/hostile/*.bin "$root/tests/hostile/MANIFEST"
rm -rf "$root/tests/fuzz/corpus"
"$tmp/gen_corpus" "$root/tests/hostile" "$root/tests/fuzz/corpus"
cp "$root/conf/intaked.yaml" "$root/tests/fuzz/corpus/config/intaked.yaml"
echo "gen_corpus.sh: $(ls "$root"/tests/hostile/*.bin | wc -l) hostile cases;" \
     "seeds: $(ls "$root/tests/fuzz/corpus/batch" | wc -l) batch," \
     "$(ls "$root/tests/fuzz/corpus/frame" | wc -l) frame," \
     "$(ls "$root/tests/fuzz/corpus/config" | wc -l) config"
