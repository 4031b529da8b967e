#!/usr/bin/env bash
# Makes the small media files the type-detection and metadata tests read. They are committed,
# so CI needs no ffmpeg; this script says how each was made (ffmpeg 5.1 from Debian 12).
set -euo pipefail
cd "$(dirname "$0")"
ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }
src="testsrc=duration=2:size=160x120:rate=10"
tone="sine=frequency=440:duration=2"
ff -f lavfi -i "$src" -f lavfi -i "$tone" -c:v libx264 -pix_fmt yuv420p -c:a aac -b:a 32k -shortest -movflags +faststart video.mp4
ff -f lavfi -i "$src" -c:v libx264 -pix_fmt yuv420p -movflags +faststart silent.mp4
ff -f lavfi -i "$src" -f lavfi -i "$tone" -c:v libx264 -pix_fmt yuv420p -c:a aac -b:a 32k -shortest video.mov
ff -f lavfi -i "$src" -f lavfi -i "$tone" -c:v libx264 -pix_fmt yuv420p -c:a libvorbis -shortest video.mkv
ff -f lavfi -i "$src" -f lavfi -i "$tone" -c:v libvpx-vp9 -b:v 50k -c:a libopus -shortest video.webm
ff -f lavfi -i "testsrc=duration=1:size=512x512:rate=10" -c:v libvpx-vp9 -b:v 50k -pix_fmt yuva420p sticker.webm
ff -f lavfi -i "testsrc=duration=3:size=240x240:rate=10" -f lavfi -i "sine=frequency=440:duration=3" -c:v libx264 -pix_fmt yuv420p -c:a aac -b:a 32k -shortest round.mp4
ff -f lavfi -i "testsrc=duration=1:size=80x60:rate=5" animation.gif
ff -f lavfi -i "sine=frequency=440:duration=4" -c:a libopus -b:a 16k voice.ogg
ff -f lavfi -i "sine=frequency=440:duration=2" -c:a libvorbis vorbis.ogg
ff -f lavfi -i "$tone" -c:a libmp3lame -b:a 32k -metadata title="Test Tone" -metadata artist="Sandbox Band" -id3v2_version 3 audio.mp3
ff -f lavfi -i "$tone" -c:a aac -b:a 32k audio.m4a
ff -f lavfi -i "$tone" -c:a flac audio.flac
ff -f lavfi -i "sine=frequency=440:duration=1" -ar 8000 audio.wav
ff -f lavfi -i "testsrc=duration=1:size=640x480:rate=1" -frames:v 1 photo.jpg
ff -f lavfi -i "testsrc=duration=1:size=320x240:rate=1" -frames:v 1 photo.png
ff -f lavfi -i "testsrc=duration=1:size=640x480:rate=1" -frames:v 1 -c:v libwebp photo.webp
ff -f lavfi -i "testsrc=duration=1:size=512x512:rate=1" -frames:v 1 -c:v libwebp -pix_fmt yuva420p sticker.webp
ff -f lavfi -i "testsrc=duration=1:size=64x48:rate=1" -frames:v 1 image.bmp
ff -f lavfi -i "testsrc=duration=1:size=64x48:rate=1" -frames:v 1 image.tiff
ff -f lavfi -i "testsrc=duration=1:size=4000x100:rate=1" -frames:v 1 panorama.png
# An animated sticker: gzip'd Lottie JSON.
printf '{"tgs":1,"v":"5.5.2","fr":60,"ip":0,"op":60,"w":512,"h":512,"nm":"t","ddd":0,"assets":[],"layers":[]}' | gzip -9n > sticker.tgs
printf '%%PDF-1.4\n%% not really a PDF, just a document\n' > notes.pdf
head -c 3000 /dev/urandom > random.bin
