"""Tiny data sets written in the layouts real data sets ship in (VOC, Cityscapes, CamVid, ...).

Each writer returns the root and the masks it wrote as the class indices a correct reader must
produce (computed here from the format's definition, not by pixelwise).
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from pixelwise.classes import default_palette

H, W = 20, 24


def _image(rng, h=H, w=W):
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def write_voc(root, seed=0):
    """VOCdevkit/VOC2012 with 4 annotated images (2 train, 2 val) and one image without a mask."""
    rng = np.random.default_rng(seed)
    base = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / d).mkdir(parents=True, exist_ok=True)
    palette = [v for c in default_palette(256) for v in c]
    expected = {}
    stems = ["2007_000032", "2007_000039", "2007_000063", "2007_000068"]
    for i, stem in enumerate(stems):
        mask = np.zeros((H, W), np.uint8)
        mask[2:10, 3:12] = 1 + i  # aeroplane, bicycle, bird, boat
        mask[12:18, 14:22] = 15  # person
        mask[2:10, 2] = 255  # boundary ("void") around the object
        m = Image.fromarray(mask, "P")
        m.putpalette(palette)
        m.save(base / "SegmentationClass" / f"{stem}.png")
        Image.fromarray(_image(rng)).save(base / "JPEGImages" / f"{stem}.jpg", quality=95)
        expected[stem] = mask.astype(np.int64)
    Image.fromarray(_image(rng)).save(base / "JPEGImages" / "2008_000001.jpg")  # detection-only image
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(stems[:2]) + "\n")
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(stems[2:]) + "\n")
    (base / "ImageSets" / "Segmentation" / "trainval.txt").write_text("\n".join(stems) + "\n")
    return root, expected


# Cityscapes label ids -> train ids, written out from the Cityscapes label table for the test.
CITYSCAPES_ID_TO_TRAIN = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}


def write_cityscapes(root, seed=0):
    rng = np.random.default_rng(seed)
    expected = {}
    ids = np.array([0, 1, 4, 7, 8, 11, 17, 24, 26, 33, 6, 9, 31])
    for split, city, n in (("train", "aachen", 2), ("val", "frankfurt", 1)):
        (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
        (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            stem = f"{city}_{k:06d}_000019"
            label_ids = rng.choice(ids, size=(H, W)).astype(np.uint8)
            Image.fromarray(label_ids, "L").save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
            # Other gtFine files beside it must not be taken for masks.
            Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(
                root / "gtFine" / split / city / f"{stem}_gtFine_color.png"
            )
            Image.fromarray(_image(rng)).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            expected[stem] = np.vectorize(lambda v: CITYSCAPES_ID_TO_TRAIN.get(int(v), 255))(label_ids).astype(np.int64)
    return root, expected


def write_camvid_segnet(root, seed=0):
    rng = np.random.default_rng(seed)
    expected = {}
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for k in range(n):
            stem = f"0001TP_{split}{k:03d}"
            mask = rng.integers(0, 12, (H, W)).astype(np.uint8)  # 0..10 classes, 11 void
            Image.fromarray(mask, "L").save(root / f"{split}annot" / f"{stem}.png")
            Image.fromarray(_image(rng)).save(root / split / f"{stem}.png")
            expected[stem] = mask.astype(np.int64)
    (root / "train.txt").write_text("unused by the reader\n")
    return root, expected


CAMVID_COLOURS = {
    "Sky": (128, 128, 128),
    "Road": (128, 64, 128),
    "Car": (64, 0, 128),
    "Void": (0, 0, 0),
    "Pedestrian": (64, 64, 0),
}


def write_camvid_color(root, seed=0):
    """Frames in train/ and val/, colour labels in train_labels/ and val_labels/ as <name>_L.png."""
    rng = np.random.default_rng(seed)
    names = list(CAMVID_COLOURS)
    colours = {}
    for split, n in (("train", 2), ("val", 1)):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}_labels").mkdir(parents=True, exist_ok=True)
        for k in range(n):
            stem = f"0016E5_{split}{k:02d}"
            pick = rng.integers(0, len(names), (H, W))
            rgb = np.array([CAMVID_COLOURS[names[i]] for i in pick.ravel()], np.uint8).reshape(H, W, 3)
            Image.fromarray(rgb).save(root / f"{split}_labels" / f"{stem}_L.png")
            Image.fromarray(_image(rng)).save(root / split / f"{stem}.png")
            colours[stem] = np.array([names[i] for i in pick.ravel()]).reshape(H, W)
    return root, colours


def write_ade20k(root, seed=0):
    rng = np.random.default_rng(seed)
    base = root / "ADEChallengeData2016"
    expected = {}
    for folder, n in (("training", 2), ("validation", 1)):
        (base / "images" / folder).mkdir(parents=True, exist_ok=True)
        (base / "annotations" / folder).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            stem = f"ADE_{folder[:5]}_{k:08d}"
            stored = rng.choice(np.array([0, 1, 2, 13, 150]), size=(H, W)).astype(np.uint8)
            Image.fromarray(stored, "L").save(base / "annotations" / folder / f"{stem}.png")
            Image.fromarray(_image(rng)).save(base / "images" / folder / f"{stem}.jpg", quality=95)
            expected[stem] = np.where(stored == 0, 255, stored.astype(np.int64) - 1)
    return root, expected


def box(x0, y0, x1, y1):
    """A COCO polygon of the rectangle with corners (x0, y0) and (x1, y1)."""
    return [float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]


def write_coco(root):
    """instances_train.json + instances_val.json, images under train/ and val/.

    Category ids are sparse (3 = cat, 7 = dog, 9 = kite) -> classes 1, 2, 3 after background.
    """
    from pycocotools import mask as mask_utils

    cats = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 9, "name": "kite"}]
    rng = np.random.default_rng(0)
    kite = np.zeros((40, 50), np.uint8)
    kite[30:36, 2:9] = 1
    compressed = mask_utils.encode(np.asfortranarray(kite))
    compressed["counts"] = compressed["counts"].decode("ascii")
    crowd = np.zeros((40, 50), np.uint8)
    crowd[20:30, 20:40] = 1  # rows 20..24 of it lie under the dog
    # Uncompressed RLE: column-major run lengths, starting with a run of zeros.
    flat = crowd.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v == cur:
            n += 1
        else:
            runs.append(n)
            cur, n = v, 1
    runs.append(n)
    files = {}
    for split, images in (("train", ["a.jpg", "b.jpg"]), ("val", ["c.jpg"])):
        (root / split).mkdir(parents=True, exist_ok=True)
        entries, anns = [], []
        for i, name in enumerate(images):
            iid = 100 * (split == "val") + i + 1
            Image.fromarray(_image(rng, 40, 50)).save(root / split / name, quality=95)
            entries.append({"id": iid, "file_name": name, "height": 40, "width": 50})
        # a.jpg: a large dog with a small cat on top (cat listed first: order in the file must not matter),
        # a crowd region partly under the dog, and a kite as compressed RLE.
        anns += (
            [
                {
                    "id": 1,
                    "image_id": 1,
                    "category_id": 3,
                    "segmentation": [box(10, 10, 19, 19)],
                    "area": 100,
                    "iscrowd": 0,
                },
                {
                    "id": 2,
                    "image_id": 1,
                    "category_id": 7,
                    "segmentation": [box(5, 5, 29, 24)],
                    "area": 500,
                    "iscrowd": 0,
                },
                {
                    "id": 3,
                    "image_id": 1,
                    "category_id": 7,
                    "segmentation": {"size": [40, 50], "counts": runs},
                    "area": 42,
                    "iscrowd": 1,
                },
                {"id": 4, "image_id": 1, "category_id": 9, "segmentation": compressed, "area": 42, "iscrowd": 0},
            ]
            if split == "train"
            else [
                {
                    "id": 9,
                    "image_id": 101,
                    "category_id": 9,
                    "segmentation": [box(40, 0, 49, 9)],
                    "area": 100,
                    "iscrowd": 0,
                },
            ]
        )
        (root / "annotations").mkdir(exist_ok=True)
        path = root / "annotations" / f"instances_{split}.json"
        path.write_text(json.dumps({"images": entries, "annotations": anns, "categories": cats}))
        files[split] = path
    return root, kite.astype(bool), crowd.astype(bool)


def write_labelme(root, with_labels_file=False):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    docs = {
        "street1": [
            {"label": "road", "points": [[0, 10], [23, 10], [23, 19], [0, 19]], "shape_type": "polygon"},
            {"label": "car", "points": [[4, 12], [9, 16]], "shape_type": "rectangle"},  # on top of road
            {"label": "__ignore__", "points": [[20, 0], [23, 3]], "shape_type": "rectangle"},
            {"label": "car", "points": [[1, 1], [5, 5]], "shape_type": "line"},  # no area
        ],
        "street2": [
            {"label": "car", "points": [[12, 10], [12, 14]], "shape_type": "circle"},
            {"label": "person", "points": [[2, 2], [6, 2], [6, 8], [2, 8]], "shape_type": "polygon"},
        ],
    }
    for stem, shapes in docs.items():
        Image.fromarray(_image(rng)).save(root / f"{stem}.jpg", quality=95)
        (root / f"{stem}.json").write_text(
            json.dumps(
                {
                    "version": "5.4.1",
                    "flags": {},
                    "shapes": [{**s, "group_id": None, "flags": {}} for s in shapes],
                    "imagePath": f"{stem}.jpg",
                    "imageData": None,
                    "imageHeight": H,
                    "imageWidth": W,
                }
            )
        )
    if with_labels_file:
        (root / "labels.txt").write_text("__ignore__\n_background_\nperson\ncar\nroad\nbicycle\n")
    return root


def write_instance_folder(root, n=4, things=("car", "person"), size=32, eight_bit=False):
    """images/, masks/ and instances/ (16-bit, or 8-bit with ``eight_bit``): two cars that touch, a person,
    a stripe of grass (stuff). Returns root and {stem: (mask, ids)} as written."""
    rng = np.random.default_rng(0)
    for d in ("images", "masks", "instances"):
        (root / d).mkdir(parents=True, exist_ok=True)
    names = ["background", "grass", "car", "person"]
    text = f"names: [{', '.join(names)}]\n"
    if things is not None:
        text += f"things: [{', '.join(things)}]\n"
    (root / "classes.yaml").write_text(text)
    expected = {}
    for k in range(n):
        mask = np.zeros((size, size), np.uint8)
        ids = np.zeros((size, size), np.uint16)
        mask[size - 6 :, :] = 1  # grass
        mask[4:12, 2 + k : 10 + k], ids[4:12, 2 + k : 10 + k] = 2, 1  # car 1
        mask[4:12, 10 + k : 16 + k], ids[4:12, 10 + k : 16 + k] = 2, 300  # car 300, touching car 1
        mask[16:24, 20:26], ids[16:24, 20:26] = 3, 2  # a person
        stem = f"s{k}"
        Image.fromarray(_image(rng, size, size)).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask, "L").save(root / "masks" / f"{stem}.png")
        stored = ids.astype(np.uint8) if eight_bit else ids
        Image.fromarray(stored).save(root / "instances" / f"{stem}.png")
        expected[stem] = (mask.astype(np.int64), stored.astype(np.int64))
    return root, expected


def write_coco_instances(root, crowd_only=False, outside=False):
    """One instances_train.json with two images: a.jpg holds two cats (one partly over the other) and a
    crowd of dogs; b.jpg one dog (or, with ``crowd_only``, a crowd region only). ``outside``: the dog of
    b.jpg reaches past the right edge."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    images = [{"id": i + 1, "file_name": f"{n}.jpg", "height": 30, "width": 40} for i, n in enumerate("ab")]
    for im in images:
        Image.fromarray(_image(rng, 30, 40)).save(root / "images" / im["file_name"], quality=95)
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [box(2, 2, 12, 12)], "area": 100, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [box(8, 8, 14, 14)], "area": 36, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 2, "segmentation": [box(20, 20, 30, 28)], "area": 80, "iscrowd": 1},
    ]
    dog = box(30, 5, 45 if outside else 38, 15)
    anns.append(
        {"id": 4, "image_id": 2, "category_id": 2, "segmentation": [dog], "area": 80, "iscrowd": int(crowd_only)}
    )
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / "instances_train.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    return root


def write_labelme_groups(root, classes_yaml=None):
    """Two LabelMe files: a person drawn as two polygons of group_id 1, a car with group_id 2, a car
    without group_id, and a road (stuff) under them."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    shapes = [
        {"label": "road", "points": [[0, 12], [23, 12], [23, 19], [0, 19]], "group_id": None},
        {"label": "person", "points": [[1, 1], [5, 1], [5, 5], [1, 5]], "group_id": 1},
        {"label": "person", "points": [[1, 6], [5, 6], [5, 10], [1, 10]], "group_id": 1},
        {"label": "car", "points": [[10, 13], [16, 13], [16, 18], [10, 18]], "group_id": 2},
        {"label": "car", "points": [[17, 13], [22, 13], [22, 18], [17, 18]], "group_id": None},
    ]
    for stem in ("p1", "p2"):
        Image.fromarray(_image(rng)).save(root / f"{stem}.jpg", quality=95)
        doc = {
            "shapes": [{**s, "shape_type": "polygon", "flags": {}} for s in shapes],
            "imagePath": f"{stem}.jpg",
            "imageData": None,
            "imageHeight": H,
            "imageWidth": W,
        }
        (root / f"{stem}.json").write_text(json.dumps(doc))
    if classes_yaml:
        (root / "classes.yaml").write_text(classes_yaml)
    return root


def write_cityscapes_instances(root):
    """One train image: two cars (label id 26) and a caravan (30, ignored) as objects, road elsewhere.
    Returns root and the expected (H, W) ids (cars 1 and 2, 0 elsewhere)."""
    rng = np.random.default_rng(0)
    city = root / "gtFine" / "train" / "aachen"
    left = root / "leftImg8bit" / "train" / "aachen"
    city.mkdir(parents=True, exist_ok=True)
    left.mkdir(parents=True, exist_ok=True)
    stem = "aachen_000000_000019"
    labels = np.full((H, W), 7, np.uint8)  # road
    inst = np.full((H, W), 7, np.uint16)
    labels[2:8, 2:8], inst[2:8, 2:8] = 26, 26000
    labels[2:8, 10:16], inst[2:8, 10:16] = 26, 26001
    labels[12:18, 2:8], inst[12:18, 2:8] = 30, 30000  # caravan: ignored class
    Image.fromarray(labels, "L").save(city / f"{stem}_gtFine_labelIds.png")
    Image.fromarray(inst).save(city / f"{stem}_gtFine_instanceIds.png")
    Image.fromarray(_image(rng)).save(left / f"{stem}_leftImg8bit.png")
    expected = np.zeros((H, W), np.int32)
    expected[2:8, 2:8], expected[2:8, 10:16] = 1, 2
    return root, expected
