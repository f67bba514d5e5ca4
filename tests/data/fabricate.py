"""Miniature datasets written in their published layouts (tiny JPEGs + the real metadata formats).

Used by the reader tests and by the pipeline's end-to-end tests (e.g. ``make_cub200(tmp / "cub200")`` then
``dvc exp run -S dataset=cub200``). Every ``make_<name>(root, ...)`` creates ``root`` and returns it as the
path to hand to ``read_index(<name>, root)``; the docstrings give the resulting counts.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def write_jpeg(path: Path, seed: int, size: int = 8, label: int = 0) -> None:
    """A size x size RGB JPEG: a per-label base colour plus seeded noise (classes are told apart by colour)."""
    rng = np.random.default_rng(seed)
    base = np.array([(53 * label) % 256, (97 * label + 80) % 256, (151 * label + 160) % 256], dtype=np.int16)
    pixels = np.clip(base + rng.integers(-20, 21, size=(size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_cub200(root, n_classes: int = 6, per_class: int = 8, size: int = 32, nested: bool = False) -> Path:
    """CUB_200_2011 layout: class ids 1..n_classes (``NNN.Class_NNN``), ``per_class`` images each; even image
    numbers are training images (train_test_split 1), so closed_set gives n*per_class/2 train and test rows;
    bounding_boxes.txt holds 'id 1 2 10 12' (x1, y1, x2, y2 = 1, 2, 11, 14). ``nested`` puts everything
    under ``root/CUB_200_2011/`` as the tgz extracts. Defaults: 48 images of 32 x 32 (24 train / 24 test)."""
    root = Path(root)
    base = root / "CUB_200_2011" if nested else root
    images, labels, split, boxes, classes = [], [], [], [], []
    image_id = 0
    for c in range(1, n_classes + 1):
        folder = f"{c:03d}.Class_{c:03d}"
        classes.append(f"{c} {folder}")
        for k in range(per_class):
            image_id += 1
            rel = f"{folder}/Class_{c:03d}_{k:04d}_{image_id}.jpg"
            write_jpeg(base / "images" / rel, seed=image_id, size=size, label=c)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {int(k % 2 == 0)}")
            boxes.append(f"{image_id} 1.0 2.0 10.0 12.0")
    _write(base / "images.txt", images)
    _write(base / "image_class_labels.txt", labels)
    _write(base / "train_test_split.txt", split)
    _write(base / "bounding_boxes.txt", boxes)
    _write(base / "classes.txt", classes)
    return root


INSHOP_ITEMS = {"train": [3, 5, 9], "test": [2, 7]}  # item numbers (id_00000003, ...)


def make_inshop(root, img_level: bool = True) -> Path:
    """In-Shop layout: Eval/list_eval_partition.txt (count, header, rows) and Img/img/... (``img_level=False``:
    img/... directly under root). Train items 3, 5, 9 with 2 images each (6 rows); test items 2 and 7 with
    1 query and 2 gallery images each (2 query, 4 gallery rows)."""
    root = Path(root)
    rows, seed = [], 0
    plan = [(i, "train", 2) for i in INSHOP_ITEMS["train"]]
    plan += [(i, s, n) for i in INSHOP_ITEMS["test"] for s, n in (("query", 1), ("gallery", 2))]
    for item, status, n in plan:
        for k in range(n):
            seed += 1
            name = f"img/WOMEN/Dresses/id_{item:08d}/{seed:02d}_{k + 1}_front.jpg"
            write_jpeg(root / ("Img/" if img_level else "") / name, seed=seed, label=item)
            rows.append(f"{name:<60} id_{item:08d} {status}")
    _write(root / "Eval" / "list_eval_partition.txt",
            [str(len(rows)), "image_name item_id evaluation_status"] + rows)
    return root


def make_sop(root, info_files: bool = False) -> Path:
    """SOP layout: Ebay_train.txt (classes 1-3, super classes 1-2, 2 images each: 6 rows) and Ebay_test.txt
    (classes 4-6, super class 3 for 6, 2 images each: 6 rows); images in <super>_final/ at root.
    ``info_files=True``: S2SD's layout (txt files in Info_Files/, images under images/)."""
    root = Path(root)
    supers = {1: "bicycle", 2: "cabinet", 3: "chair"}
    plan = {"train": [(1, 1), (2, 1), (3, 2)], "test": [(4, 2), (5, 2), (6, 3)]}
    image_id = 0
    for split, classes in plan.items():
        rows = ["image_id class_id super_class_id path"]
        for class_id, super_id in classes:
            for k in range(2):
                image_id += 1
                rel = f"{supers[super_id]}_final/{100 + class_id}_{k}.JPG"
                write_jpeg(root / ("images" if info_files else "") / rel, seed=image_id, label=class_id)
                rows.append(f"{image_id} {class_id} {super_id} {rel}")
        _write(root / ("Info_Files" if info_files else "") / f"Ebay_{split}.txt", rows)
    return root


def make_msmt17(root, version: int = 1) -> Path:
    """MSMT17 layout: list_train.txt (pids 0, 1, 2 x 2 images, camera 1), list_val.txt (pids 0, 1 x 1 image,
    camera 2), list_query.txt (pids 0, 1 at camera 3), list_gallery.txt (pids 0, 1 at cameras 3 and 5);
    images in train/ and test/ (``version=2``: mask_train_v2/ and mask_test_v2/)."""
    root = Path(root)
    dirs = {"train": "train", "test": "test"} if version == 1 else {"train": "mask_train_v2", "test": "mask_test_v2"}
    plan = {
        "list_train.txt": ("train", [(p, 1) for p in (0, 1, 2) for _ in range(2)]),
        "list_val.txt": ("train", [(0, 2), (1, 2)]),
        "list_query.txt": ("test", [(0, 3), (1, 3)]),
        "list_gallery.txt": ("test", [(0, 3), (0, 5), (1, 3), (1, 5)]),
    }
    seed = 0
    for name, (folder, items) in plan.items():
        rows = []
        for pid, cam in items:
            seed += 1
            rel = f"{pid:04d}/{pid:04d}_{seed:03d}_{cam:02d}_0303morning_{seed:04d}_0.jpg"
            write_jpeg(root / dirs[folder] / rel, seed=seed, label=pid)
            rows.append(f"{rel} {pid}")
        _write(root / name, rows)
    return root


CARS_CLASSES = ["Acura RL Sedan 2012", "AM General Hummer SUV 2000", "Audi A5 Coupe 2012", "BMW X6 SUV 2012"]


def make_cars196(root, layout: str = "s2sd") -> Path:
    """Cars layout with the 4 ``CARS_CLASSES`` x 2 images. ``s2sd``: images/<class name>/ (plus a macOS
    '._' file to be skipped); string order puts 'AM General' (label 0) before 'Acura' (1).
    ``published``: cars_annos.mat + car_ims/, class ids 1..4 in ``CARS_CLASSES`` order, bbox (1, 2, 5, 6)."""
    root = Path(root)
    if layout == "s2sd":
        for c, name in enumerate(CARS_CLASSES):
            for k in range(2):
                write_jpeg(root / "images" / name / f"{k:06d}.jpg", seed=10 * c + k, label=c)
        (root / "images" / CARS_CLASSES[0] / "._000000.jpg").write_bytes(b"\0\0")
        return root
    from scipy.io import savemat

    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    annos = np.zeros((1, 2 * len(CARS_CLASSES)), dtype=[(f, "O") for f in fields])
    for i in range(annos.shape[1]):
        c = i // 2 + 1
        rel = f"car_ims/{i + 1:06d}.jpg"
        write_jpeg(root / rel, seed=i, label=c)
        annos[0, i] = (rel, 1.0, 2.0, 5.0, 6.0, c, i % 2)
    savemat(root / "cars_annos.mat", {"annotations": annos, "class_names": np.array(CARS_CLASSES, dtype=object)})
    return root


def make_cifar100(root, n_train: int = 6, n_test: int = 4, nested: bool = True) -> Path:
    """cifar-100-python/{train,test,meta} pickles (``nested=False``: the pickles directly in root); row i has
    fine label (7 * i) % 100, coarse label i % 20 and pixel data equal to i (mod 256)."""
    root = Path(root)
    base = root / "cifar-100-python" if nested else root
    base.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        entry = {
            "filenames": [f"img_{i}.png" for i in range(n)],
            "batch_label": f"{split} batch",
            "fine_labels": [(7 * i) % 100 for i in range(n)],
            "coarse_labels": [i % 20 for i in range(n)],
            "data": np.repeat(np.arange(n, dtype=np.uint8)[:, None], 3072, axis=1),
        }
        with open(base / split, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)]}
    with open(base / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return root


IMAGENET_WNIDS = ["n01440764", "n01443537", "n01484850"]


def make_imagenet(root) -> Path:
    """ImageFolder layout over ``IMAGENET_WNIDS``: train/<wnid>/ with 2, 2 and 3 images (class 2 adds one in
    sub/ and an upper-case .PNG; class 0 adds a README.txt to be ignored); val/<wnid>/ with 1 image each."""
    root = Path(root)
    for c, wnid in enumerate(IMAGENET_WNIDS):
        write_jpeg(root / "train" / wnid / f"{wnid}_1.JPEG", seed=c, label=c)
        second = root / "train" / wnid / (f"sub/{wnid}_2.JPEG" if c == 2 else f"{wnid}_2.JPEG")
        write_jpeg(second, seed=10 + c, label=c)
        write_jpeg(root / "val" / wnid / f"ILSVRC2012_val_{c + 1:08d}.JPEG", seed=20 + c, label=c)
    Image.open(root / "train" / IMAGENET_WNIDS[2] / f"{IMAGENET_WNIDS[2]}_1.JPEG").save(
        root / "train" / IMAGENET_WNIDS[2] / "extra.PNG")
    (root / "train" / IMAGENET_WNIDS[0] / "README.txt").write_text("not an image\n")
    return root


def make_revisited(root, name: str) -> Path:
    """``root/<name>/gnd_<name>.pkl`` + jpg/: 6 database images ``<name>_db_i`` and 2 queries; query 0:
    easy [0, 1], hard [2], junk [3], bbx [1, 2, 6, 7]; query 1: easy [], hard [4, 5], junk [], bbx
    [0, 0, 8, 8]."""
    root = Path(root)
    imlist = [f"{name}_db_{i}" for i in range(6)]
    qimlist = [f"{name}_query_{q}" for q in range(2)]
    gnd = [{"bbx": [1.0, 2.0, 6.0, 7.0], "easy": [0, 1], "hard": [2], "junk": [3]},
           {"bbx": [0.0, 0.0, 8.0, 8.0], "easy": [], "hard": [4, 5], "junk": []}]
    for i, im in enumerate(imlist + qimlist):
        write_jpeg(root / name / "jpg" / f"{im}.jpg", seed=i, label=i)
    with open(root / name / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f)
    return root


def make_roxford5k(root) -> Path:
    return make_revisited(root, "roxford5k")


def make_rparis6k(root) -> Path:
    return make_revisited(root, "rparis6k")


GLDV2_GROUPS = {11: ["0a1b2c3d4e5f6071", "1b2c3d4e5f607182"], 7: ["2c3d4e5f60718293"],
                42: ["3d4e5f6071829304", "4e5f607182930415", "5f60718293041526"]}


def make_gldv2(root, meta: bool = False, groups: dict[int, list[str]] | None = None) -> Path:
    """GLDv2 layout: train_clean.csv (``meta=True``: meta/train_clean.csv) with the 3 ``GLDV2_GROUPS``
    (landmark 7 has a single image; ``groups``: other landmark -> ids) and the images at
    train/a/b/c/<id>.jpg (per-landmark colour, per-image noise)."""
    root = Path(root)
    groups = GLDV2_GROUPS if groups is None else groups
    rows = ["landmark_id,images"] + [f"{lid},{' '.join(ids)}" for lid, ids in groups.items()]
    _write(root / ("meta" if meta else "") / "train_clean.csv", rows)
    for lid, ids in groups.items():
        for n, i in enumerate(ids):
            write_jpeg(root / "train" / i[0] / i[1] / i[2] / f"{i}.jpg", seed=lid if groups is GLDV2_GROUPS
                       else 1000 * lid + n, label=lid)
    return root


def gldv2_groups(n_landmarks: int, per_landmark: int) -> dict[int, list[str]]:
    """``n_landmarks`` landmarks (ids 1..n) with ``per_landmark`` 16-hex-digit image ids each, for
    :func:`make_gldv2` (a miniature large enough to train on)."""
    return {lid: [f"{lid:08x}{n:08x}" for n in range(per_landmark)] for lid in range(1, n_landmarks + 1)}


SVD_TRAIN_GT = [("tq0", "tc0", 1), ("tq0", "tc1", 0), ("tq1", "tc2", 1)]
SVD_TEST_GT = [("q0", "c0", 1), ("q0", "c1", 0), ("q0", "c2", 1), ("q1", "c1", 1), ("q1", "c3", 0)]
SVD_UNLABELED = ["u0", "u1", "u2"]
SVD_FRAMES = {"tq0": 3, "tc0": 2, "tc1": 2, "tq1": 2, "tc2": 3, "q0": 4, "q1": 2,
              "c0": 3, "c1": 2, "c2": 5, "c3": 2, "u0": 2, "u1": 3, "u2": 1}


def make_svd(root, flat: bool = False) -> Path:
    """SVD in whiten_mtd's layout: metadata-release/{all-video-id, labeled-data-id, unlabeled-data-id, query-id,
    groundtruth, train_groundtruth, test_groundtruth} (ids written with ``.mp4``), num_frames and
    frames/<id>/<NNNN>.jpg (8 x 8) with ``SVD_FRAMES`` frames per video. ``flat``: the metadata files at the
    root under whiten_mtd's config key names (all_video_id, labeled_id, ...; num_frames as frame_count_file).
    Ground truth ``SVD_TRAIN_GT`` / ``SVD_TEST_GT``; distractors ``SVD_UNLABELED``. Default read: train 12
    frames of 5 videos, query 6 frames of 2 videos, gallery 12 + 6 frames of 4 labeled + 3 unlabeled videos."""
    root = Path(root)
    queries = list(dict.fromkeys(q for q, _, _ in SVD_TRAIN_GT + SVD_TEST_GT))
    labeled = list(dict.fromkeys(c for _, c, _ in SVD_TRAIN_GT + SVD_TEST_GT))
    names = {"all_video_id": "all-video-id", "labeled_id": "labeled-data-id", "unlabeled_id": "unlabeled-data-id",
             "query_id": "query-id", "groundtruth": "groundtruth", "train_groundtruth": "train_groundtruth",
             "test_groundtruth": "test_groundtruth"}
    meta = root if flat else root / "metadata-release"
    files = {
        "all_video_id": queries + labeled + SVD_UNLABELED, "labeled_id": labeled, "unlabeled_id": SVD_UNLABELED,
        "query_id": queries,
    }
    for key, ids in files.items():
        _write(meta / (key if flat else names[key]), [f"{v}.mp4" for v in ids])
    for key, pairs in (("groundtruth", SVD_TRAIN_GT + SVD_TEST_GT), ("train_groundtruth", SVD_TRAIN_GT),
                       ("test_groundtruth", SVD_TEST_GT)):
        _write(meta / key, [f"{q}.mp4 {c}.mp4 {lab}" for q, c, lab in pairs])
    _write(root / ("frame_count_file" if flat else "num_frames"), [f"{v} {n}" for v, n in SVD_FRAMES.items()])
    for i, (vid, n) in enumerate(SVD_FRAMES.items()):
        for f in range(n):
            write_jpeg(root / "frames" / vid / f"{f:04d}.jpg", seed=100 * i + f, label=i)
    return root


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_fashion_mnist(root, train_per_class: int = 12, test_per_class: int = 6, size: int = 28,
                       gz: bool = True) -> Path:
    """Fashion-MNIST idx files (10 classes): class c is a bright square at a class-specific position plus noise.

    Counts: 10 * train_per_class train and 10 * test_per_class test images, labels cycling 0..9.
    """
    import gzip

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, per_class in (("train", train_per_class), ("t10k", test_per_class)):
        labels = np.tile(np.arange(10), per_class).astype(np.uint8)
        images = rng.integers(0, 60, size=(len(labels), size, size)).astype(np.uint8)
        for i, c in enumerate(labels):
            top, left = (c // 4) * (size // 4), (c % 4) * (size // 4)
            images[i, top:top + size // 3, left:left + size // 3] = 230
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = _idx_bytes(array)
            name = f"{prefix}-{kind}-ubyte" + (".gz" if gz else "")
            (root / name).write_bytes(gzip.compress(data) if gz else data)
    return root


MAKERS = {
    "fashion_mnist": make_fashion_mnist,
    "cub200": make_cub200, "inshop": make_inshop, "sop": make_sop, "msmt17": make_msmt17,
    "cars196": make_cars196, "cifar100": make_cifar100, "imagenet": make_imagenet,
    "roxford5k": make_roxford5k, "rparis6k": make_rparis6k, "gldv2": make_gldv2, "svd": make_svd,
}
